"""``python -m train.run [preset=NAME] [key=value ...]``: train HRM (single process or under torchrun).

Without ``preset=``, the preset is ``seed-4090`` on a machine with CUDA and ``cpu-tiny`` otherwise.
Exit codes: 0 done (or stopped cleanly by SIGINT/SIGTERM after saving ``last``), 2 bad config or
input, a run folder in use or holding another run, or a file system error (one line naming the path),
3 non-finite loss or gradient. ``--help`` lists the presets and every config key.
"""

from __future__ import annotations

import sys

from hrm_fast.distributed import exit_worker
from hrm_fast.entry import main

if __name__ == "__main__":
    exit_worker(main(sys.argv[1:]))
