"""Benchmark session setup.

CPU runs pin one thread (2 threads are slower on the CI machines). Every run that measures (not
``--benchmark-disable``) writes its results to ``.benchmarks/latest.json``, which
``python -m bench.report`` prints as one table.
"""

from __future__ import annotations

import json
import platform
import time
from pathlib import Path

import torch

if not torch.cuda.is_available():
    torch.set_num_threads(1)

RESULTS = Path(__file__).resolve().parents[1] / ".benchmarks" / "latest.json"


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name()
    return f"CPU {platform.processor() or platform.machine()} ({torch.get_num_threads()} thread)"


def pytest_sessionfinish(session, exitstatus):
    bench_session = getattr(session.config, "_benchmarksession", None)
    if bench_session is None or bench_session.disabled or not bench_session.benchmarks:
        return
    rows = []
    for bench in bench_session.benchmarks:
        if not bench.stats:  # skipped or failed
            continue
        data = bench.as_dict(include_data=False)
        rows.append({"name": data["name"], "group": data["group"], "stats": data["stats"],
                     "extra_info": data["extra_info"]})
    RESULTS.parent.mkdir(exist_ok=True)
    tmp = RESULTS.with_suffix(".tmp")
    tmp.write_text(json.dumps({"device": device_name(), "torch": torch.__version__,
                               "time": time.strftime("%Y-%m-%d %H:%M:%S"), "benchmarks": rows}, indent=1))
    tmp.replace(RESULTS)
