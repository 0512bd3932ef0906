"""hrm_fast: train and evaluate the Hierarchical Reasoning Model on ARC, fast, on one GPU or many."""

__version__ = "0.1.0"
