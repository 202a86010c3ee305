"""Checks of chapter parameters, before a chapter runs.

Every parameter of a chapter notebook gets its type from the notebook's own default (an ``int``
stays an ``int``; a ``float`` also takes an ``int``; a list keeps its element type) and, where the
name has a meaning across chapters, a range or a set of allowed values from :data:`RULES`.
:func:`check` returns every problem at once, so a run with a wrong override stops before any work
with one message that names each bad parameter.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Sequence

__all__ = ["Rule", "RULES", "check"]


@dataclass(frozen=True)
class Rule:
    """What a value must satisfy beyond its type: ``test(value)`` is true, else ``says`` is the reason."""

    test: Callable[[Any], bool]
    says: str


def _count(low: int) -> Rule:
    return Rule(lambda v: v >= low, f"an integer >= {low}")


def _real(low: float, high: float | None = None, low_open: bool = False) -> Rule:
    def ok(v) -> bool:
        if not math.isfinite(v):
            return False
        if v < low or (low_open and v == low):
            return False
        return high is None or v <= high

    return Rule(ok, f"a number {'>' if low_open else '>='} {low:g}" + ("" if high is None else f" and <= {high:g}"))


def _choices(options: Callable[[], Sequence[str]]) -> Rule:
    def ok(v) -> bool:
        items = v if isinstance(v, list) else [v]
        return all(i in options() for i in items) and (not isinstance(v, list) or len(v) > 0)

    return Rule(ok, _Lazy(lambda: f"one or more of {sorted(options())}"))


class _Lazy(str):
    """A message computed when shown (the registries are imported only when a value is wrong)."""

    def __new__(cls, make: Callable[[], str]):
        obj = super().__new__(cls, "")
        obj._make = make
        return obj

    def __str__(self) -> str:
        return self._make()

    def __format__(self, spec: str) -> str:
        return format(self._make(), spec)


def _datasets() -> Sequence[str]:
    from geed.data.ood import EXTERNAL_SETS, OFFLINE_SETS

    return OFFLINE_SETS + EXTERNAL_SETS


def _groups() -> Sequence[str]:
    return ("C2", "C4", "C8", "C16", "D2", "D4", "D8", "D16", "flip")


def _archs() -> Sequence[str]:
    from geed.models.zoo import zoo_models

    return zoo_models()


RULES: dict[str, Rule] = {
    **{name: _count(1) for name in ("n_points", "n_models", "iterations", "checkpoint_every", "record_every", "batch_size",
                                    "si_points", "si_steps", "n_fit", "power_iterations")},
    "n_reference": _count(2),
    "pretrain_iterations": _count(0),
    "seed": _count(0),
    "width": _real(0.0, 1.0, low_open=True),
    "lr": _real(0.0, 1.0, low_open=True),
    "reg_weights": Rule(lambda v: len(v) > 0 and all(math.isfinite(w) and w > 0 for w in v), "a non-empty list of positive numbers"),
    "si_target": _real(0.0, 1.0, low_open=True),
    "betas": Rule(lambda v: len(v) > 0 and all(0.0 <= b <= 1.0 for b in v), "a non-empty list of numbers in [0, 1]"),
    "datasets": _choices(_datasets),
    "control_sets": _choices(_datasets),
    "archs": _choices(_archs),
    "imagenet_archs": Rule(lambda v: all(a in _archs() for a in v), _Lazy(lambda: f"a list of names from {sorted(_archs())}")),
    "imagenet_size": Rule(lambda v: 9 <= v <= 225 and v % 2 == 1, "an odd integer from 9 to 225 (quarter turns must be exact)"),
    "arch": _choices(_archs),
    "init": Rule(lambda v: v in ("imagenet", "scratch"), "one of 'imagenet', 'scratch'"),
    "size": Rule(lambda v: 9 <= v <= 225 and v % 2 == 1, "an odd integer from 9 to 225 (quarter turns must be exact)"),
    "group": _choices(_groups),
    # the C8-CNN's hidden layers have an action for the rotations of C8 only (channelwise G-EED)
    "beyond.group": Rule(lambda v: v in ("C2", "C4", "C8"), "one of 'C2', 'C4', 'C8' (the subgroups of the C8-CNN's group)"),
    "section41.group": Rule(lambda v: v in ("C2", "C4", "C8"), "one of 'C2', 'C4', 'C8' (the subgroups of the C8-CNN's group)"),
    "weights_source": Rule(lambda v: v in ("auto", "published", "offline"), "one of 'auto', 'published', 'offline'"),
}


def _type_name(v: Any) -> str:
    return "null" if v is None else type(v).__name__


def _same_type(value: Any, default: Any) -> bool:
    if default is None:  # an optional value: None or a string (a path)
        return value is None or isinstance(value, str)
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, list):
        if not isinstance(value, list):
            return False
        kinds = {type(d) for d in default}
        return all(any(_same_type(v, k()) for k in kinds) for v in value) if kinds else True
    return isinstance(value, type(default))


def check(chapter: str, params: dict[str, Any], defaults: dict[str, Any]) -> list[str]:
    """Every problem with ``params`` for a chapter whose notebook defaults are ``defaults``."""
    problems = []
    for name, value in params.items():
        if name not in defaults:
            problems.append(f"{name}: chapter {chapter!r} has no such parameter; its parameters: {sorted(set(defaults) - {'profile'})}")
            continue
        default = defaults[name]
        if not _same_type(value, default):
            problems.append(f"{name}: expected {_type_name(default)} like the default {default!r}; got {_type_name(value)} {value!r}")
            continue
        rule = RULES.get(f"{chapter}.{name}", RULES.get(name))  # a chapter's own rule first
        if rule is not None and value is not None and not rule.test(value):
            problems.append(f"{name}: must be {rule.says}; got {value!r}")
    return problems
