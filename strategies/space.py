"""The nnictl search space of the encoding, and the check that a given one agrees with it.

``search_space/`` generates the real ``search_space.json`` from the NNI ModelSpace; this
module derives the same dict from :mod:`search_space.encoding` (``layer_i``: the allowed
block ids of layer i, ``ratio_i``: Table XV ratios) so the tuner can be tested without it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from search_space.encoding import NUM_LAYERS, RATIOS, allowed_blocks


def nni_search_space() -> dict[str, dict[str, Any]]:
    """``{"layer_i": {"_type": "choice", "_value": [...]}, "ratio_i": ...}`` for i in 0..15."""
    space: dict[str, dict[str, Any]] = {}
    for i in range(NUM_LAYERS):
        space[f"layer_{i}"] = {"_type": "choice", "_value": list(allowed_blocks(i))}
        space[f"ratio_{i}"] = {"_type": "choice", "_value": list(RATIOS)}
    return space


def check_search_space(search_space: Any) -> None:
    """Raise ``ValueError`` naming the first key where ``search_space`` and the encoding differ.

    Integral floats may arrive as ints (NNI sends 1.0 as 1); choice order does not matter.
    """
    if not isinstance(search_space, Mapping):
        raise ValueError(f"search space: expected an object, got {type(search_space).__name__}")
    expected = nni_search_space()
    missing = sorted(set(expected) - set(search_space))
    extra = sorted(set(search_space) - set(expected))
    if missing or extra:
        raise ValueError(f"search space does not match the TAM-NAS encoding: missing keys {missing}, "
                         f"unknown keys {extra}")
    for key, exp in expected.items():
        got = search_space[key]
        if not isinstance(got, Mapping) or got.get("_type") != "choice" or not isinstance(got.get("_value"), list):
            raise ValueError(f"search space.{key}: expected {{'_type': 'choice', '_value': [...]}}, got {got!r}")
        values = got["_value"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"search space.{key}: choices must be numbers, got {values!r}")
        if len(values) != len(exp["_value"]) or any(
                not any(math.isclose(float(v), float(e), abs_tol=1e-9) for v in values) for e in exp["_value"]):
            raise ValueError(f"search space.{key}: choices {values} differ from the encoding's {exp['_value']}")
