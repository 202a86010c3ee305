"""Argument checks shared by the library's public functions."""
from __future__ import annotations

import numbers


def is_whole(value) -> bool:
    """Whether ``value`` is an integer (Python's or numpy's) and not a bool: ``True`` is not a count."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)
