"""Solve one ARC task from Python: python examples/solve_api.py CHECKPOINT TASK.json"""

import json
import sys

import hrm_fast

solver = hrm_fast.Solver.from_checkpoint(sys.argv[1], device="auto")
task = json.load(open(sys.argv[2]))  # {"train": [{"input", "output"}, ...], "test": [{"input"}, ...]}
attempts = solver.solve(task, steps=300, num_aug=8)  # [test input][rank] -> Attempt
for i, ranked in enumerate(attempts):
    for rank, a in enumerate(ranked):
        print(f"test {i} attempt {rank + 1}: {a.votes}/{a.views} votes, confidence {a.confidence:.2f}: {a.grid}")
