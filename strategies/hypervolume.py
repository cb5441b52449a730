"""Hypervolume of a front on normalised objectives (paper §IV-A2 tracks it per generation).

Normalisation (fixed so that runs compare):

- every objective is mapped to [0, 1] *to be minimised* with a configured range
  ``(low, high)``: a maximised objective ``v`` becomes ``(high - v) / (high - low)``
  (accuracies in [0, 1] become errors), a minimised one ``(v - low) / (high - low)``;
- defaults (:data:`DEFAULT_BOUNDS`): ``adv_acc`` and ``clean_acc`` in [0, 1], ``params`` in
  [0, 2.5e6] (the paper's tiny-model ceiling), ``flops`` in [0, 1e9];
- the reference point is :data:`REFERENCE_POINT` = 1.1 in every normalised objective; points
  outside the reference box add nothing.

The volume itself comes from pymoo's :class:`pymoo.indicators.hv.HV` (moocore underneath).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from search_space.architecture import Objective

REFERENCE_POINT = 1.1
DEFAULT_BOUNDS: dict[str, tuple[float, float]] = {
    "adv_acc": (0.0, 1.0),
    "clean_acc": (0.0, 1.0),
    "params": (0.0, 2.5e6),
    "flops": (0.0, 1e9),
}


def normalize(values: Sequence[Mapping[str, float]], objectives: Sequence[Objective],
              bounds: Mapping[str, tuple[float, float]]) -> np.ndarray:
    """Objective dicts -> (n, m) matrix in [0, 1], minimised (see module docstring)."""
    out = np.empty((len(values), len(objectives)))
    for j, o in enumerate(objectives):
        lo, hi = bounds[o.name]
        col = np.array([float(v[o.name]) for v in values])
        out[:, j] = (hi - col) / (hi - lo) if o.direction == "max" else (col - lo) / (hi - lo)
    return out


def hypervolume(F: np.ndarray, ref: float | Sequence[float] = REFERENCE_POINT) -> float:
    """Hypervolume dominated by the minimised points ``F`` up to the reference point."""
    F = np.atleast_2d(np.asarray(F, dtype=float))
    if F.size == 0:
        return 0.0
    ref_point = np.broadcast_to(np.asarray(ref, dtype=float), (F.shape[1],)).copy()
    F = F[np.all(F < ref_point, axis=1)]
    if len(F) == 0:
        return 0.0
    from pymoo.indicators.hv import HV  # imported here: pymoo is slow to import

    return float(HV(ref_point=ref_point)(F))


def hypervolume_of(values: Sequence[Mapping[str, float]], objectives: Sequence[Objective],
                   bounds: Mapping[str, tuple[float, float]] | None = None) -> float:
    """Hypervolume of objective dicts, normalised with ``bounds`` (default :data:`DEFAULT_BOUNDS`)."""
    if not values:
        return 0.0
    return hypervolume(normalize(values, objectives, {**DEFAULT_BOUNDS, **(bounds or {})}))
