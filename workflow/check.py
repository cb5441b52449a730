"""``python -m workflow check CONFIG``: an NSGA-II search config checked before ``nnictl create``."""

from __future__ import annotations

import json
import os
from pathlib import Path

import yaml

TUNER_CLASS = "strategies.tuner.NSGA2Tuner"
TUNER_NAME = "TamNasNSGA2"  # builtinName in strategies/nsga2_meta.yml


def check_search_config(path: str | os.PathLike) -> str:
    """Check an NSGA-II search config before ``nnictl create``; returns a one-line summary.

    NNI 3.0 does not run a tuner's classArgs validator for these configs: bad classArgs only
    show up as an ERROR experiment whose tuner "did not connect" (the reason is in the
    dispatcher log; docs/architecture.md §8). This catches them first, with the file and field
    named: NNI's own schema check, the tuner's classArgs, the search space file, and a trial
    limit below the search's budget (the last generation would never complete).
    """
    from nni.experiment.config import ExperimentConfig

    from search_space.encoding import ArchitectureError
    from search_space.space import check_search_space
    from strategies.tuner import parse_class_args

    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read the config: {e}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected a YAML mapping, got {type(raw).__name__}")
    try:
        ExperimentConfig.load(str(path)).validate()
    except Exception as e:  # NNI raises ValueError, AssertionError or TypeError
        raise ValueError(f"{path}: NNI rejects the config: {e}") from None
    tuner = raw.get("tuner") or {}
    if tuner.get("className") != TUNER_CLASS and tuner.get("name") != TUNER_NAME:
        raise ValueError(f"{path}: tuner: expected className {TUNER_CLASS} (or name {TUNER_NAME}), got "
                         f"{tuner.get('className') or tuner.get('name')!r}")
    try:
        config, space, _ = parse_class_args(tuner.get("classArgs") or {})
    except ValueError as e:
        raise ValueError(f"{path}: tuner.classArgs: {e}") from None
    space_file = path.parent / raw["searchSpaceFile"] if "searchSpaceFile" in raw else None
    try:
        search_space = raw["searchSpace"] if space_file is None else json.loads(space_file.read_text())
        check_search_space(search_space)
    except (OSError, ValueError, KeyError, ArchitectureError) as e:
        raise ValueError(f"{path}: searchSpaceFile {space_file}: {e}") from None
    budget = config.population_size + config.generations * config.offspring_size
    max_trials = raw.get("maxTrialNumber")
    if max_trials is not None and max_trials < budget:
        raise ValueError(f"{path}: maxTrialNumber: {max_trials} is below the search's budget "
                         f"{config.population_size} + {config.generations} x {config.offspring_size} = {budget} "
                         "evaluations; the last generation would never complete")
    return (f"{path}: ok: NSGA-II {config.population_size} + {config.generations} x {config.offspring_size} = "
            f"{budget} evaluations on {space.dataset} (width {space.width_multiplier}), maxTrialNumber "
            f"{max_trials}, trialConcurrency {raw.get('trialConcurrency')}")
