"""Keep the README true: every command in its ```bash blocks is run here or by CI.

"README" means ``DOCS``: README.md and docs/performance.md (the measurements moved out of the README).
``COVERAGE`` says, for each README command, how it is exercised:
- ``("ci", fragment)``: ``.ci/run`` runs it (the fragment must appear in .ci/run);
- ``("test", "tests/file.py::name")``: a named test runs it (with cut-down sizes); the test must exist;
- ``("run", extra_args)``: this file runs the command itself, in a scratch folder, with ``extra_args``
  appended (for sizes only: later flags override earlier ones), and checks it succeeds.
A README command missing from ``COVERAGE`` fails ``test_every_readme_command_is_covered``.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from torchrun_launch import launch

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("README.md", "docs/performance.md")
CONCEPTARC = ROOT.parent / "shared" / "data" / "ConceptARC"

# seed-4090 cut down to run in seconds on a CPU (the preset's own size is checked by test_model/test_flops).
SEED_ON_CPU = (
    "device=cpu", "data.path=data/small", "model.H_layers=1", "model.L_layers=1", "model.H_cycles=1",
    "model.L_cycles=1", "model.halt_max_steps=2", "train.global_batch_size=2", "train.grad_accum=1",
    "model.dropout=0.0", "model.forward_dtype=float32", "train.max_steps=1", "run.dir=runs/seed",
)
EVAL_CLI = "tests/test_eval_end_to_end.py::test_cli_untrained_checkpoint"
SOLVE_TEST = "tests/test_solve.py::test_new_family_member_is_solved_after_fitting_and_not_before"
# trm-4090 cut down the same way (its own size is checked by tests/test_model_trm.py).
TRM_ON_CPU = (
    "device=cpu", "data.path=data/small", "model.hidden_size=32", "model.num_heads=2", "model.L_layers=1",
    "model.H_cycles=2", "model.L_cycles=1", "model.halt_max_steps=2", "model.puzzle_emb_ndim=32",
    "model.puzzle_emb_tokens=2", "model.forward_dtype=float32", "train.global_batch_size=2", "train.grad_accum=1",
    "train.max_steps=1", "run.dir=runs/trm",
)
EXPORT_ONNX = "tests/test_export.py::test_onnx_export_equals_eager_over_all_segments"
COVERAGE: dict[str, tuple[str, ...]] = {
    "python3 -m venv .venv && source .venv/bin/activate": ("ci", "python3 -m venv"),
    "pip install torch==2.13.0": ("ci", "pip install -q torch==2.13.0"),
    'pip install -e ".[dev]" --no-build-isolation': ("ci", 'pip install -q -e ".[dev]" --no-build-isolation'),
    "pytest": ("ci", "\npytest\n"),
    "python -m train.run": ("test", "tests/test_train_run.py::test_a_short_run_builds_its_data_and_learns"),
    "python -m train.evaluate checkpoint=runs/<run>": ("test", EVAL_CLI),
    "python -m hrm_fast.info preset=seed-4090": ("run",),
    "python -m hrm_fast.data.build --source arc-agi-1 --source ../ConceptARC/corpus --eval-source arc-agi-1 "
    "--num-aug 1000 --seed 42 --val-fraction 0.1 --out data/arc-aug-1000": ("run", "--subset", "3", "--num-aug", "2"),
    "python -m train.run preset=seed-4090": ("run", *SEED_ON_CPU),
    "python -m train.evaluate checkpoint=runs/<run>/best": ("test", EVAL_CLI),
    "python -m hrm_fast.data.build --source arc-agi-1 --eval-source arc-agi-1 --max-grid-size 10 --num-aug 8 "
    "--out data/small": ("run",),
    "python -m hrm_fast.data.show data/small --puzzle 007bbfb7 --html puzzle.html": ("run",),
    "python -m train.run preset=cpu-tiny run.dir=runs/demo train.max_steps=6 eval.every=3 checkpoint.every=3": ("run",),
    "python -m train.run preset=cpu-tiny run.dir=runs/demo train.max_steps=9 run.resume=auto": ("run",),
    ("torchrun --standalone --nproc-per-node 2 -m train.run preset=cpu-tiny run.dir=runs/ddp "
     "train.max_steps=4"): ("run",),
    "python -m train.evaluate checkpoint=runs/<run>/best [eval.views=all|N] [eval.batch_size=N] [out=DIR]": (
        "test", EVAL_CLI),
    "python -m hrm_fast.eval.score submission.json --solutions arc-agi-1": ("run",),
    "python -m hrm_fast.eval.compare runs/a/best-eval-test runs/b/best-eval-test": (
        "test", "tests/test_eval_compare.py::test_gained_and_lost_match_the_score_deltas"),
    "python -m hrm_fast.runs list": ("test", "tests/test_runs.py::test_plot_and_list_commands"),
    "python -m hrm_fast.runs plot runs/demo runs/ddp --out curves.png": (
        "test", "tests/test_runs.py::test_plot_and_list_commands"),
    "pytest bench/ --benchmark-only": ("ci", "pytest bench/ --benchmark-only"),
    "python -m bench.test_train_step --rounds 7": ("run", "--preset", "cpu-tiny", "--rounds", "1"),
    # nsys is GPU-only: the test runs the profiled command itself (profile.steps works without CUDA),
    # with the seed-4090 model cut down to CPU size.
    "nsys profile --capture-range=cudaProfilerApi --capture-range-end=stop --trace=cuda,nvtx,cublas,cudnn "
    "--output hrm_steps python -m train.run preset=seed-4090 profile.steps=5 train.max_steps=20": (
        "nsys", *SEED_ON_CPU[:-2], "train.max_steps=9", "run.dir=runs/nsys"),
    "python -m train.run preset=cpu-tiny profile.steps=3 profile.torch=true train.max_steps=10": ("run",
                                                                                                  "run.dir=runs/prof"),
    "python -m bench.report": ("ci", "python -m bench.report"),
    "python -m train.solve task.json [more.json | tasks/ ...] checkpoint=runs/<run>/best solve.steps=300 "
    "solve.num_aug=8 out=solved": ("test", SOLVE_TEST),
    "python -m train.run init.from=runs/<run>/best data.path=data/conceptarc init.freeze=none train.max_steps=2000": (
        "test", "tests/test_init_from.py::test_init_from_maps_rows_by_name_and_starts_a_fresh_run"),
    "python -m hrm_fast.info preset=trm-paper": (
        "test", "tests/test_model_trm.py::test_info_prints_trm_parameters_and_flops"),
    "python -m train.run preset=trm-4090": ("run", *TRM_ON_CPU),
    "python -m train.run preset=cpu-small": ("run", "data.path=data/small", "train.max_steps=2", "eval.every=2",
                                             "checkpoint.every=2", "run.dir=runs/small"),
    "python -m hrm_fast.info preset=hrm-4090": (
        "test", "tests/test_config.py::test_hrm_4090_fits_the_seed_budget_and_draws_each_view_as_cpu_small"),
    "python -m train.run preset=hrm-4090": ("run", *SEED_ON_CPU[:-1], "run.dir=runs/hrm4090"),
    "python -m hrm_fast.checkpoint import-trm step_N --trm-config all_config.yaml --out checkpoints/trm": (
        "test", "tests/test_model_trm.py::test_trm_layout_export_reimports_to_identical_outputs"),
    "python -m bench.test_trm_step --rounds 5": ("run", "--impl", "hrm", "trm", "--rounds", "1"),
    "python -m bench.test_pad_aware --rounds 16": ("run", "--rows", "1", "--rounds", "1"),
    "python -m bench.test_pad_aware --sides": ("run", "--sides"),
    "python -m hrm_fast.export runs/<run>/best --format onnx --out export/onnx": ("test", EXPORT_ONNX),
    "python -m hrm_fast.export runs/<run>/best --format pt2 --puzzles none --out export/pt2": (
        "test", "tests/test_export.py::test_pt2_puzzles_none_fed_the_right_row_equals_full_model"),
    "python -m hrm_fast.export.bench export/onnx": ("test", EXPORT_ONNX),
    "bash bench/fetch_gpu_wheels.sh": ("ci", "bash bench/fetch_gpu_wheels.sh"),
    "bash bench/gpu_check.sh --dry": ("ci", "bash bench/gpu_check.sh --dry"),
    # the learning benchmark at a toy budget (a toy model on 6x6 tasks), its outputs checked
    "python -m bench.learn --recipe baseline --budget 1e14 --seed 0 --out docs/learning": (
        "test", "tests/test_bench_learn.py::test_outputs_have_the_promised_structure"),
    "python -m bench.learn report --out docs/learning": (
        "test", "tests/test_bench_learn.py::test_a_finished_run_is_not_rerun_and_report_redraws"),
}


# Every README ```python block must be the code of one of these files, which the named test runs.
PYTHON_BLOCKS = {"examples/solve_api.py": "tests/test_solve.py::test_readme_python_api_example_runs"}


def readme_text() -> str:
    """The text of every file in ``DOCS``, in that order."""
    return "\n".join((ROOT / doc).read_text() for doc in DOCS)


def readme_commands() -> list[str]:
    """Commands of the ```bash blocks of ``DOCS``: continuation lines joined, comments dropped."""
    text = readme_text()
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", text, flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s+#\s.*$", "", line).strip()
            line = re.sub(r"\s+", " ", line)
            if line and not line.startswith("#"):
                commands.append(line)
    return commands


def test_every_readme_command_is_covered():
    missing = [c for c in readme_commands() if c not in COVERAGE]
    assert not missing, f"README commands without a test or CI step (add them to COVERAGE): {missing}"
    stale = [c for c in COVERAGE if c not in readme_commands()]
    assert not stale, f"COVERAGE lists commands no longer in the README: {stale}"


def test_every_readme_python_block_is_run():
    blocks = re.findall(r"```python\n(.*?)```", readme_text(), flags=re.S)
    for block in blocks:
        owners = [f for f in PYTHON_BLOCKS if block.strip() in (ROOT / f).read_text()]
        assert owners, f"README python block not found in any of {list(PYTHON_BLOCKS)} (add it there):\n{block}"
    for test in PYTHON_BLOCKS.values():
        path, name = test.split("::")
        assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), flags=re.M), test


def test_ci_runs_the_readme_install_and_test_commands():
    ci = (ROOT / ".ci" / "run").read_text()
    for command, how in COVERAGE.items():
        if how[0] == "ci":
            assert how[1] in ci, f".ci/run does not run the README command {command!r}"


def test_named_tests_exist():
    for command, how in COVERAGE.items():
        if how[0] == "test":
            path, name = how[1].split("::")
            assert re.search(rf"^def {name}\(", (ROOT / path).read_text(), flags=re.M), (command, how[1])


def _run(command: str, extra: tuple[str, ...], cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    argv = shlex.split(command) + list(extra)
    if argv[0] == "nsys":  # run what nsys would profile
        argv = argv[argv.index("python"):]
    if argv[0] == "python":
        argv[0] = sys.executable
    elif argv[0] == "torchrun":
        argv = [sys.executable, "-m", "torch.distributed.run", *argv[1:]]
    if len(argv) > 2 and argv[2].startswith("bench."):
        cwd = ROOT  # bench/ is not installed: its commands run from the repository root, as the README says
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("TRITON_INTERPRET", None)
    if command.startswith("torchrun"):
        run_dir = next(a.split("=", 1)[1] for a in argv if a.startswith("run.dir="))
        result = launch(argv, cwd=cwd, env=env, timeout=timeout, restore=[cwd / run_dir])
    else:
        result = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A scratch working folder; ``../ConceptARC`` points at the shared ConceptARC copy."""
    base = tmp_path_factory.mktemp("readme")
    work = base / "work"
    work.mkdir()
    if CONCEPTARC.exists():
        (base / "ConceptARC").symlink_to(CONCEPTARC)
    return work


def test_info_command(scratch):
    out = _run("python -m hrm_fast.info preset=seed-4090", (), scratch).stdout
    assert "34,092,034" in out and "2.53 TFLOP" in out


@pytest.mark.slow
def test_data_and_training_commands_in_readme_order(scratch):
    cmds = readme_commands()
    order = [c for c in cmds
             if COVERAGE[c][0] in ("run", "nsys") and "eval.score" not in c and "hrm_fast.info" not in c]
    order.sort(key=lambda c: "--out data/small" not in c)  # later commands train on data/small
    for command in order:
        if "ConceptARC" in command and not CONCEPTARC.exists():
            continue  # only in checkouts with ../shared beside them
        _run(command, COVERAGE[command][1:], scratch, timeout=900)
    assert (scratch / "data" / "small" / "identifiers.json").exists()
    assert (scratch / "puzzle.html").read_text().count("<") > 10
    records = [json.loads(x) for x in (scratch / "runs/demo/metrics.jsonl").read_text().splitlines()]
    assert max(r["step"] for r in records) == 9  # resumed from 6 and went on
    assert (scratch / "runs/ddp/last/model.safetensors").exists()
    assert (scratch / "runs/seed/last/model.safetensors").exists()
    assert (scratch / "runs/trm/last/ema.safetensors").exists()
    assert (scratch / "runs/small/last/model.safetensors").exists()
    assert (scratch / "runs/hrm4090/last/model.safetensors").exists()
    assert (scratch / "runs/prof/profile/trace.json").exists() and (scratch / "runs/nsys/last").exists()


def test_score_command_on_an_oracle_submission(scratch):
    from hrm_fast.eval.solutions import load_solutions

    solutions = load_solutions("arc-agi-1")
    submission = {task: [{"attempt_1": g.tolist(), "attempt_2": g.tolist()} for g in grids]
                  for task, grids in solutions.items()}
    (scratch / "submission.json").write_text(json.dumps(submission))
    out = _run("python -m hrm_fast.eval.score submission.json --solutions arc-agi-1", (), scratch).stdout
    scores = dict(re.findall(r"^\s+(\w+) .*: ([\d.]+)$", out, flags=re.M))
    assert scores == {"kaggle": "1.0000", "arc_prize": "1.0000", "all_or_nothing": "1.0000"}, out
