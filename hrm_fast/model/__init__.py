"""The model as the papers define it: HRM (hrm.py), TRM (trm.py), their layers, precision helpers and the ACT
loss. Imports only :mod:`hrm_fast.ops`, :mod:`hrm_fast.config` and the token constants of
:mod:`hrm_fast.data.encode`."""
