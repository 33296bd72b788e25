"""Argument checks at the public boundary: ``TypeError`` for a wrong type, ``ValueError`` for a bad value.

Both name the argument and what it must be, in the library's one message form
``f"`{name}` must be {expected}, got {value!r}"``. ``bool`` is never accepted as a number.
"""

from __future__ import annotations

import math
import numbers
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np


def check_int(name: str, value: Any, expected: str, valid: Callable[[int], bool] = lambda v: True) -> int:
    """``value`` as an ``int``; ``TypeError`` unless a Python or NumPy integer, ``ValueError`` unless ``valid``."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"`{name}` must be {expected}, got {value!r}")
    if not valid(int(value)):
        raise ValueError(f"`{name}` must be {expected}, got {value!r}")
    return int(value)


def check_real(name: str, value: Any, expected: str, valid: Callable[[float], bool] = np.isfinite) -> float:
    """``value`` as a ``float``; ``TypeError`` unless a real number, ``ValueError`` unless ``valid``
    (default: finite).
    """
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"`{name}` must be {expected}, got {value!r}")
    if not valid(float(value)):
        raise ValueError(f"`{name}` must be {expected}, got {value!r}")
    return float(value)


def check_path(name: str, value: Any) -> Path:
    """``value`` as a :class:`~pathlib.Path` (``~`` expanded); ``TypeError`` unless a str or path-like."""
    if not isinstance(value, (str, os.PathLike)):
        raise TypeError(f"`{name}` must be a str or path, got {value!r}")
    return Path(value).expanduser()


def check_positive_real(name: str, value: Any) -> float:
    """``value`` as a ``float``; ``TypeError`` unless a :class:`numbers.Real`, ``ValueError`` unless
    finite and > 0 (sizes and spacings in mm, volumes in mm³...).
    """
    if not isinstance(value, numbers.Real) or isinstance(value, bool):
        raise TypeError(f"`{name}` must be a number, got {value!r}")
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"`{name}` must be a positive finite number, got {value!r}")
    return float(value)
