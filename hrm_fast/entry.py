"""Command-line entry of ``python -m train.run``: preset choice, config errors, process group life cycle;
:func:`exit_2_on` for the other commands' ``main``."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import ParamSpec

import torch

from hrm_fast import distributed as D

P = ParamSpec("P")


def exit_2_on(*errors: type[Exception]) -> Callable[[Callable[P, int]], Callable[P, int]]:
    """Decorate a command's ``main``: an exception of ``errors`` prints ``error: <message>`` on stderr and gives
    exit code 2 (bad input); any other exception propagates."""

    def decorate(main: Callable[P, int]) -> Callable[P, int]:
        @functools.wraps(main)
        def wrapped(*args: P.args, **kwargs: P.kwargs) -> int:
            try:
                return main(*args, **kwargs)
            except errors as exc:
                print(f"error: {exc}", file=sys.stderr)
                return 2

        return wrapped

    return decorate


USAGE = "usage: python -m train.run [preset=NAME] [section.key=value ...]   (e.g. train.lr=3e-4 run.resume=auto)"


def default_preset(argv: list[str]) -> tuple[str | None, str]:
    """(preset to add, why). ``None`` when the command line names one itself."""
    if any(a.split("=", 1)[0].strip() == "preset" for a in argv):
        return None, "preset given on the command line"
    if torch.cuda.is_available():
        return "seed-4090", f"CUDA device found ({torch.cuda.get_device_name(0)}): the single-GPU seed plan"
    return "cpu-tiny", "no CUDA device: the small CPU preset (a tiny model on 10x10 ARC grids, about 5 min on 2 cores)"


def main(argv: list[str]) -> int:
    """Parse ``argv`` (``key=value`` items), train, return the exit code."""
    from hrm_fast.config import ConfigError, config_help, load_config

    if any(a in ("-h", "--help") for a in argv):
        print(f"{USAGE}\n\nWithout preset=: seed-4090 when CUDA is available, else cpu-tiny. Exit codes: 0 done or "
              "stopped by SIGINT/SIGTERM (last saved), 2 bad config, input or file system, 3 non-finite loss.\n")
        print(config_help())
        return 0
    bad = [a for a in argv if "=" not in a]
    if bad:
        print(f"error: arguments must be key=value, got {bad}\n{USAGE}", file=sys.stderr)
        return 2
    preset, why = default_preset(argv)
    if int(os.environ.get("RANK", "0")) == 0:
        named = preset or next(a.split("=", 1)[1] for a in argv if a.split("=", 1)[0].strip() == "preset")
        print(f"preset {named}: {why}", flush=True)
    try:
        config = load_config(preset, argv)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    from hrm_fast.checkpoint import CheckpointError
    from hrm_fast.data.sources import DataError
    from hrm_fast.fs import FsError, os_error_line
    from hrm_fast.training.run_dir import RunDirError
    from hrm_fast.training.trainer import Trainer

    info = D.setup(config.device)
    if info.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
        # one thread per physical core; on the 2-core dev machines 2 threads ran 4x slower than 1
        threads = max(1, (os.cpu_count() or 2) // 2 // info.world_size)
        torch.set_num_threads(threads)
        if info.is_main:
            print(f"CPU threads per rank: {threads} (set OMP_NUM_THREADS to choose)", flush=True)
    try:
        try:
            trainer = Trainer(config, info)
        except (ConfigError, CheckpointError, DataError, RunDirError, FsError, ValueError) as err:
            if info.is_main or not isinstance(err, RunDirError):  # rank 0's run-folder error reaches every rank
                print(f"error: {err}", file=sys.stderr)
            return 2
        except OSError as err:  # a file system error while setting up (reading the data, writing the run folder)
            print(f"error: {os_error_line(err)}", file=sys.stderr)
            return 2
        try:
            return trainer.train()
        finally:
            trainer.close()
    finally:
        D.teardown(info)
