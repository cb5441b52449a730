"""Search objectives: parsing them from a config, reading them from a trial's metrics, and the
minimisation matrix the NSGA-II operators sort (:mod:`strategies.operators`)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from search_space.architecture import DEFAULT_OBJECTIVES, Objective


def parse_objectives(spec: Any) -> tuple[Objective, ...]:
    """Objectives from ``[{"name": .., "direction": ..}]``, ``["adv_acc:max", ...]`` or ``{"adv_acc": "max"}``."""
    if spec is None:
        return DEFAULT_OBJECTIVES
    if isinstance(spec, Mapping):
        return tuple(Objective(str(k), str(v)) for k, v in spec.items())
    if not isinstance(spec, Sequence) or isinstance(spec, str):
        raise ValueError(f"objectives: expected a list, got {spec!r}")
    out = []
    for i, o in enumerate(spec):
        if isinstance(o, Objective):
            out.append(o)
        elif isinstance(o, Mapping) and set(o) == {"name", "direction"}:
            out.append(Objective(str(o["name"]), str(o["direction"])))
        elif isinstance(o, str) and o.count(":") == 1:
            name, direction = o.split(":")
            out.append(Objective(name, direction))
        else:
            raise ValueError(f"objectives[{i}]: expected {{name, direction}} or 'name:max|min', got {o!r}")
    return tuple(out)


def objective_matrix(values: Sequence[Mapping[str, float]], objectives: Sequence[Objective]) -> np.ndarray:
    """Minimisation matrix: one row per evaluated architecture, maximised objectives negated."""
    sign = np.array([-1.0 if o.direction == "max" else 1.0 for o in objectives])
    F = np.array([[float(v[o.name]) for o in objectives] for v in values], dtype=float).reshape(-1, len(objectives))
    return F * sign


def extract_objectives(value: Any, objectives: Sequence[Objective]) -> dict[str, float]:
    """The configured objectives from a trial's metric dict; ``ValueError`` names what is missing."""
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a metric dict with keys {[o.name for o in objectives]}, got {value!r}")
    out = {}
    for o in objectives:
        if o.name not in value:
            raise ValueError(f"metric dict has no {o.name!r} (keys: {sorted(value)})")
        v = value[o.name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise ValueError(f"metric {o.name!r} is not a finite number: {v!r}")
        out[o.name] = float(v)
    return out
