"""Per-step temperature and proportion schedules."""

from __future__ import annotations

from typing import Sequence, Union

from .errors import InputError

Schedule = Union[float, Sequence[float]]


def schedule_values(spec: Schedule, steps: int, name: str = "schedule") -> list[float]:
    """A number (or a one-value sequence) is constant; a pair (start, end) anneals linearly; a
    sequence of length `steps` is taken as given."""
    if isinstance(spec, (int, float)):
        return [float(spec)] * steps
    values = [float(v) for v in spec]
    if len(values) == steps:
        return values
    if len(values) == 1:  # [0.8] is the constant 0.8
        return values * steps
    if len(values) == 2:
        start, end = values
        if steps == 1:
            return [start]
        return [start + (end - start) * i / (steps - 1) for i in range(steps)]
    raise InputError(f"{name}: give a number, a (start, end) pair or {steps} values (one per step); "
                     f"got {len(values)} values")
