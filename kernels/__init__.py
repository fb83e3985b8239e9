"""Compiled kernels of fusedense, one sub-package per backend with the same op names.

``reference`` (NumPy, the test oracle), ``cpu`` (Numba) and ``cuda`` (CuPy). The ops and
their formulas are specified once, in :mod:`kernels.spec`.
"""
