"""What a finished search left behind: its front, hypervolume history and every evaluated architecture.

``--search`` takes an nnictl experiment id (looked up in nnictl's registry) or a directory: an
experiment directory, a ``python -m strategies search`` output, or the output folder of
``python -m workflow pipeline`` (its search).
"""

from __future__ import annotations

import csv
import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from search_space.encoding import Architecture, Objective, SpaceConfig, load_front
from strategies.class_args import table_flops_fn, table_params_fn
from strategies.nsga2 import NSGA2Search, state_config

from .results import ReportError, resolve_experiment

logger = logging.getLogger(__name__)

# Where NSGA2Tuner saves its state (strategies.tuner.STATE_FILE under NNI's checkpoint folder).
STATE_FILES = ("checkpoint/nsga2_state.json", "nsga2_state.json")


@dataclass
class SearchRun:
    """What a search left behind: its front, history and (when saved) every evaluated architecture."""

    directory: Path
    name: str
    front: list[Architecture]
    objectives: list[Objective]
    space: SpaceConfig | None
    history: list[dict[str, float]]
    evaluated: list[Architecture]
    evaluated_source: str  # "tuner state <path>" or "front.json"


def search_directory(source: str | os.PathLike) -> Path:
    """The experiment directory of ``source``; a pipeline output folder stands for its search."""
    directory = resolve_experiment(source, "--search")
    pipeline = directory / "pipeline.json"
    if pipeline.exists() and (directory / "nni").is_dir():
        search_id = json.loads(pipeline.read_text()).get("search_id")
        if search_id and (directory / "nni" / search_id).is_dir():
            directory = directory / "nni" / search_id
    return directory


def load_search(source: str | os.PathLike) -> SearchRun:
    """Read ``front.json``, ``history.csv`` and the tuner state of a search (id or directory)."""
    directory = search_directory(source)
    front_file = directory / "front.json"
    if not front_file.exists():
        raise ReportError(f"--search: {front_file}: file not found (not a search experiment directory?)")
    front, objectives, space = load_front(front_file)
    meta = json.loads(front_file.read_text())
    name = str(meta.get("experiment_id") or directory.name)
    history = read_history(directory / "history.csv") if (directory / "history.csv").exists() else []
    if not history:
        logger.warning("%s: no history.csv; the report has no hypervolume curve", directory)
    evaluated, evaluated_source = list(front), "front.json"
    for rel in STATE_FILES:
        state_file = directory / rel
        if state_file.exists():
            evaluated = _evaluated_from_state(state_file, space)
            evaluated_source = f"tuner state {rel}"
            break
    else:
        logger.warning("%s: no tuner state (%s); top-k statistics use the front only",
                       directory, " or ".join(STATE_FILES))
    return SearchRun(directory, name, front, objectives, space, history, evaluated, evaluated_source)


def read_history(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of the tuner's ``history.csv`` (generation, evaluations, failures, front_size, hypervolume)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"generation", "hypervolume"} - set(reader.fieldnames or [])
        if missing:
            raise ReportError(f"{path}: missing column(s) {sorted(missing)} (header {reader.fieldnames})")
        rows = []
        for line, row in enumerate(reader, start=2):
            out: dict[str, float] = {}
            for key, value in row.items():
                try:
                    out[key] = int(value) if key != "hypervolume" else float(value)
                except (TypeError, ValueError):
                    raise ReportError(f"{path}:{line}: {key} {value!r} is not a number") from None
            rows.append(out)
    return rows


def _evaluated_from_state(path: Path, space: SpaceConfig | None) -> list[Architecture]:
    try:
        state = json.loads(path.read_text())
        config = state_config(state)
        # a search repaired into a parameter range restores with the table it repaired with
        params_fn = table_params_fn(space) if config.get("param_range") is not None and space else None
        flops_fn = table_flops_fn(space) if config.get("flops_range") is not None and space else None
        search = NSGA2Search.from_state(state, params_fn, flops_fn)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ReportError(f"{path}: not a readable NSGA-II state ({e})") from None
    keys = sorted(search.results, key=lambda k: (search.born.get(k, 0), k))
    out = []
    for k in keys:
        arch = Architecture.from_key(k)
        prov = {"generation": search.born.get(k), **search.provenance.get(k, {})}
        out.append(Architecture(arch.blocks, arch.ratios, dict(search.results[k]), prov))
    return out
