"""One BLAS thread for numpy's small dense linear algebra (eigen-decompositions of ≤ 128 × 128).

For matrices this small a second OpenBLAS thread only adds synchronisation, and when the other
core is busy it makes ``np.linalg.eigh`` 10–40× slower (measured: 86 ms instead of 2 ms for a
128 × 128 matrix on a loaded 2-core CPU). numpy's bundled OpenBLAS has no Python switch, so
:func:`single_blas_thread` calls its ``*_set_num_threads`` entry point through ctypes when it can
find one, and otherwise leaves everything as it is (``OPENBLAS_NUM_THREADS=1`` does the same from
the environment).
"""

from __future__ import annotations

import ctypes
from pathlib import Path

import numpy as np

_SETTERS = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads", "openblas_set_num_threads")


def _openblas_libraries() -> list[Path]:
    roots = [Path(np.__file__).parent, Path(np.__file__).parent.parent / "numpy.libs"]
    return [p for root in roots if root.is_dir() for p in root.rglob("*openblas*.so*")]


def single_blas_thread() -> bool:
    """Set numpy's OpenBLAS to one thread; True if a setter was found and called."""
    for path in _openblas_libraries():
        try:
            lib = ctypes.CDLL(str(path))
        except OSError:
            continue
        for name in _SETTERS:
            setter = getattr(lib, name, None)
            if setter is not None:
                setter(1)
                return True
    return False
