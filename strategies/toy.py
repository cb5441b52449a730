"""A cheap, deterministic 3-objective problem over the TAM-NAS genome.

Stands in for subnet evaluation in tests, the toy nnictl experiment and the search-quality
benchmark. It is shaped like the real trade-off but is *not* separable per gene:

- ``params`` grows with each layer's block cost and ratio, weighted by the stage width
  squared (stages 1/2/3 weigh 1/4/16, as channels double);
- ``clean_acc`` saturates in a capacity sum (exp), plus a pairwise term over adjacent
  layers' blocks (a fixed random symmetric matrix: epistasis);
- ``adv_acc`` needs robust (non-local) blocks, which cost clean accuracy (their clean
  quality is lower), and is a product with clean accuracy and capacity.

Tables come from a fixed seed, so values are identical in every process.
"""

from __future__ import annotations

import math

import numpy as np

from search_space.architecture import Architecture
from search_space.space import BLOCKS, NUM_BLOCKS, NUM_LAYERS, STAGE_REPEATS

_TABLE_SEED = 20240607


def _tables() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(_TABLE_SEED)
    robust = np.array([(0.75 if b.non_local else 0.3) + (0.15 if b.is_pure_robust else 0.0) for b in BLOCKS])
    robust = robust + rng.uniform(-0.15, 0.15, NUM_BLOCKS)
    quality = 1.25 - 0.6 * robust + rng.uniform(-0.1, 0.1, NUM_BLOCKS)
    cost = np.array([0.6 + 0.1 * ((b.kernel or 3) - 3) + (0.4 if b.non_local else 0.0) for b in BLOCKS])
    cost = cost * rng.uniform(0.85, 1.15, NUM_BLOCKS)
    m = rng.uniform(-1.0, 1.0, (NUM_BLOCKS, NUM_BLOCKS))
    stage = np.repeat(np.arange(len(STAGE_REPEATS)), STAGE_REPEATS)
    return {"robust": robust, "quality": quality, "cost": cost, "synergy": (m + m.T) / 2,
            "scale": 4.0 ** stage}


_T = _tables()


def toy_objectives(arch: Architecture) -> dict[str, float]:
    """``{"adv_acc", "clean_acc", "params"}`` of ``arch`` on the analytic problem.

    Accuracies lie in [0, 1]; ``params`` is an integer-valued float below 2.5e6.
    """
    b = np.asarray(arch.blocks)
    r = np.asarray(arch.ratios, dtype=float)
    s = _T["scale"]
    params = 20000.0 + float(np.sum(6000.0 * s * _T["cost"][b] * (0.25 + 0.75 * r)))
    capacity = float(np.sum(s * _T["quality"][b] * r**0.7)) / float(np.sum(s))
    synergy = float(np.sum(_T["synergy"][b[:-1], b[1:]])) / (NUM_LAYERS - 1)
    clean = 0.5 + 0.42 * (1.0 - math.exp(-2.5 * capacity)) + 0.04 * synergy
    w = np.sqrt(s)
    robust = float(np.sum(w * _T["robust"][b] * np.sqrt(r))) / float(np.sum(w))
    adv = clean * (0.2 + 0.45 * robust * (1.0 - 0.6 * math.exp(-2.0 * capacity))) - 0.02 * abs(synergy)
    return {"adv_acc": round(min(max(adv, 0.0), 1.0), 12), "clean_acc": round(min(max(clean, 0.0), 1.0), 12),
            "params": float(round(params))}
