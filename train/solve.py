"""``python -m train.solve TASK.json [TASK2.json | DIR ...] checkpoint=CKPT [solve.key=value ...] [out=DIR]``:
solve ARC tasks a trained checkpoint has never seen (see :mod:`hrm_fast.solve`).

For each task: new puzzle rows for its augmented copies (from the mean trained row), fitted on its augmented
demonstrations (``solve.mode=embedding``: network frozen; ``full``: everything trains, on a copy), then every
augmented view of the test inputs is predicted and voted. Writes ``OUT/predictions.json`` (Kaggle attempt
format), ``OUT/<task>/report.html`` per task (+ ``scores.json`` when its test outputs are known) and
``OUT/scores.json`` over the tasks with known outputs. Keys: checkpoint=, out=, device=cpu|cuda|auto,
solve.{steps,num_aug,mode,batch_size,lr,network_lr,eval_batch_size,group,seed}.
Exit codes: 0 done, 2 bad input (task, checkpoint or argument; nothing written).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

USAGE = ("usage: python -m train.solve TASK.json [TASK2.json | DIR ...] checkpoint=CKPT [solve.steps=N] "
         "[solve.num_aug=N] [solve.mode=embedding|full] [out=DIR] [device=auto]")


def main(argv: list[str]) -> int:
    if not argv or any(a in ("-h", "--help") for a in argv):
        print(USAGE if argv else f"error: no task given\n{USAGE}", file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    from hrm_fast.checkpoint import CheckpointError
    from hrm_fast.config import ConfigError, parse_override
    from hrm_fast.data.sources import DataError
    from hrm_fast.solve import SolveError, Solver
    from hrm_fast.solve.output import write_outputs
    from hrm_fast.solve.solver import solve_config
    from hrm_fast.solve.tasks import read_task_paths

    paths = [a for a in argv if "=" not in a]
    options: dict[str, str] = {}
    solve: dict[str, object] = {}
    try:
        for item in (a for a in argv if "=" in a):
            keys, value = parse_override(item)
            if keys[0] == "solve" and len(keys) == 2:
                solve[keys[1]] = value
            elif len(keys) == 1 and keys[0] in ("checkpoint", "out", "device"):
                options[keys[0]] = str(value)
            else:
                raise ConfigError(f"unknown argument {item!r} (keys: checkpoint, out, device, solve.<key>)")
        if "checkpoint" not in options:
            raise ConfigError("checkpoint=CKPT is required (a checkpoint folder or a run folder)")
        if not paths:
            raise ConfigError("give at least one task file or folder")
        settings = solve_config(solve)
        tasks = read_task_paths(paths)
        solver = Solver.from_checkpoint(options["checkpoint"], options.get("device", "auto"))
        solver.prepare(tasks, settings)  # every task checked before any work or output
    except (ConfigError, DataError, SolveError, CheckpointError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    out = Path(options.get("out") or f"runs/solve-{time.strftime('%Y%m%d-%H%M%S')}")
    print(f"solving {len(tasks)} task(s) with {solver.checkpoint} on {solver.device}: {settings.mode} mode, "
          f"{settings.steps} steps, {settings.num_aug} augmented copies each -> {out}", flush=True)
    from tqdm import tqdm

    bar = tqdm(total=len(tasks), desc="tasks", unit="task", dynamic_ncols=True, file=sys.stdout)

    def done(result) -> None:  # noqa: ANN001
        bar.update(1)
        tqdm.write(result.summary(), file=sys.stdout)

    try:
        results = solver.solve_tasks(tasks, settings, progress=True, on_result=done)
    finally:
        bar.close()
    scores = write_outputs(results, out, facts={"checkpoint": str(solver.checkpoint), **settings.model_dump()})
    line = f"wrote {out / 'predictions.json'} and {len(results)} report page(s)"
    if scores is not None:
        line += (f"; pass@2 over {scores['tasks']} task(s) with known outputs: kaggle {scores['kaggle']:.4f}, "
                 f"arc_prize {scores['arc_prize']:.4f}, all_or_nothing {scores['all_or_nothing']:.4f}")
    print(line)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
