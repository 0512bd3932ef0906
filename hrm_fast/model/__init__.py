"""The model as the paper defines it: HRM (hrm.py), TRM (trm.py), their layers and the ACT loss. Imports only
:mod:`hrm_fast.ops` and :mod:`hrm_fast.config`."""
