"""Training runs at a glance: ``python -m hrm_fast.runs list [DIR]`` and ``python -m hrm_fast.runs plot RUN ...``.

Modules: ``catalog`` (what a run folder holds: preset, steps, best validation, checkpoint steps), ``curves``
(the matplotlib figure of a run's metrics against step and training FLOPs). The CLI is ``__main__``.
"""
