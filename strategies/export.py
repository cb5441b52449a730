"""Recompute the front of a finished (or running) nnictl experiment.

Input is what ``nnictl experiment export ID --type json`` writes, or the same list from the
REST API (``GET /api/v1/nni/export-data``): succeeded trials as
``{"parameter": sample, "value": "<JSON string of the metric dict>", "trialJobId": id}``.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.request
from collections.abc import Mapping, Sequence
from typing import Any

from search_space.encoding import Architecture, ArchitectureError, Objective

from .nsga2 import extract_objectives, fast_non_dominated_sort, objective_matrix

_logger = logging.getLogger(__name__)


def read_export_file(path: str | os.PathLike) -> list[dict[str, Any]]:
    try:
        with open(path) as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ValueError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of trials (nnictl experiment export --type json)")
    return data


def fetch_export(experiment_id: str, port: int | None = None, timeout: float = 20.0) -> list[dict[str, Any]]:
    """Export data of a running experiment through NNI's REST API (port looked up by nnictl's registry)."""
    if port is None:
        from nni.tools.nnictl.config_utils import Experiments

        info = Experiments().get_all_experiments().get(experiment_id)
        if info is None:
            raise ValueError(f"experiment {experiment_id!r} is unknown to nnictl (see `nnictl experiment list --all`)")
        if info.get("status") == "STOPPED":
            raise ValueError(f"experiment {experiment_id!r} is stopped: run `nnictl experiment export "
                             f"{experiment_id} --type json --filename FILE` and pass FILE")
        port = int(info["port"])
    url = f"http://localhost:{port}/api/v1/nni/export-data"
    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 (local REST server)
            return json.loads(r.read())
    except OSError as e:
        raise ValueError(f"cannot reach the NNI REST server of {experiment_id!r} on port {port}: {e}") from None


def front_from_export(entries: Sequence[Mapping[str, Any]], objectives: Sequence[Objective]) -> list[Architecture]:
    """Non-dominated architectures among exported trials, with objectives and trial ids.

    An architecture exported twice keeps its first result; entries without the objectives are
    skipped with a warning.
    """
    archs: dict[str, Architecture] = {}
    for i, e in enumerate(entries):
        try:
            value = e["value"]
            if isinstance(value, str):
                value = json.loads(value)
            arch = Architecture.from_sample(e["parameter"], where=f"trial[{i}].parameter")
            obj = extract_objectives(value, objectives)
        except (KeyError, TypeError, ValueError, ArchitectureError) as err:  # ArchitectureError is a ValueError
            _logger.warning("skipping exported trial %d: %s", i, err)
            continue
        prov = {k: e[k] for k in ("trialJobId",) if k in e}
        archs.setdefault(arch.key, Architecture(arch.blocks, arch.ratios, obj,
                                                {"trial_id": prov["trialJobId"]} if prov else {}))
    items = list(archs.values())
    if not items:
        return []
    F = objective_matrix([a.objectives for a in items], objectives)
    return [items[i] for i in fast_non_dominated_sort(F)[0]]
