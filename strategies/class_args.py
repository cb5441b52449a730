"""The classArgs of :class:`strategies.tuner.NSGA2Tuner`: parsed and checked once, for the tuner
and for ``python -m workflow check`` before ``nnictl create`` (NNI 3.0 runs no classArgs
validator for v2 configs, so bad classArgs would only end as an ERROR experiment).

No NNI import here beyond the validator base class; no torch (docs/architecture.md §2).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from nni.utils import ClassArgsValidator

from search_space.architecture import Architecture
from search_space.space import DEFAULT_READING, SpaceConfig

from .config import CONFIG_KEYS, NSGA2Config
from .record import READING_KEY, apply_supernet_record, space_from_class_args

SPACE_KEYS = ("dataset", "width_multiplier")  # required: the supernet's space, never a silent default
_TUNER_KEYS = (*SPACE_KEYS, READING_KEY, "output_dir")  # reading: optional, the record's with classArg supernet


def parse_class_args(kwargs: Mapping[str, Any], check_reach: bool = True
                     ) -> tuple[NSGA2Config, SpaceConfig, str | None]:
    """Validate classArgs; ``ValueError`` with one clear line on anything wrong.

    ``check_reach``: also refuse a ``param_range`` the parameter table says no architecture
    reaches (off when the caller brings its own parameter count).
    """
    kwargs = apply_supernet_record(kwargs)  # classArg supernet: the space and ranges from its record
    unknown = sorted(set(kwargs) - set(CONFIG_KEYS) - set(_TUNER_KEYS))
    if unknown:
        raise ValueError(f"NSGA2Tuner classArgs: unknown key(s) {unknown}; "
                         f"known: {sorted(CONFIG_KEYS + _TUNER_KEYS)}")
    try:
        config = NSGA2Config.from_dict({k: kwargs[k] for k in CONFIG_KEYS if k in kwargs})
        missing = [k for k in SPACE_KEYS if k not in kwargs]
        if missing:
            raise ValueError(f"{' and '.join(missing)}: missing; give the supernet's space "
                             "(e.g. dataset: cifar10, width_multiplier: 2)")
        space = space_from_class_args(kwargs)
        if check_reach:
            check_param_range(config, space)
            check_flops_range(config, space)
    except (ValueError, TypeError) as e:  # ArchitectureError is a ValueError
        raise ValueError(f"NSGA2Tuner classArgs: {e}") from None
    output_dir = kwargs.get("output_dir")
    if output_dir is not None:
        if not isinstance(output_dir, str) or not output_dir:
            raise ValueError(f"NSGA2Tuner classArgs: output_dir: expected a path string, got {output_dir!r}")
        check_output_dir(output_dir)
    return config, space, output_dir


def check_output_dir(path: str | os.PathLike) -> None:
    """``ValueError`` naming ``classArgs.output_dir`` unless ``path`` is a writable directory or
    could be created as one (its nearest existing ancestor is a writable directory). Creates nothing."""
    p = Path(path).absolute()
    probe = p
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not probe.is_dir():
        raise ValueError(f"NSGA2Tuner classArgs: output_dir: {path}: {probe} is not a directory")
    if not os.access(probe, os.W_OK | os.X_OK):
        what = "" if probe == p else f" ({probe}, where it would be created)"
        raise ValueError(f"NSGA2Tuner classArgs: output_dir: {path} is not writable{what}")


def probe_output_dir(path: Path) -> None:
    """Create ``path`` and write a file into it (what ``os.access`` cannot tell: a read-only file
    system, a full disk, root's view of permissions); ``ValueError`` naming ``classArgs.output_dir``."""
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as e:
        raise ValueError(f"NSGA2Tuner classArgs: output_dir: {path} is not writable ({e.strerror or e})") from None


class NSGA2ClassArgsValidator(ClassArgsValidator):
    """Named in ``nsga2_meta.yml``. NNI 3.0 calls it only for legacy (v1) configs; for v2 configs
    ``python -m workflow check CONFIG`` runs the same checks before ``nnictl create``."""

    def validate_class_args(self, **kwargs: Any) -> None:
        parse_class_args(kwargs)


def _check_range(name: str, bounds: tuple[float, float] | None, table: Any, config: NSGA2Config,
                 space: SpaceConfig, unit: str) -> None:
    """``ValueError`` if ``bounds`` reach no architecture of the searched space (exact from ``table``)."""
    if bounds is None:
        return
    lo, hi = table(space).interval(config.ratios, config.blocks)
    low, high = bounds
    if high < lo or low > hi:
        subset = "" if config.blocks is None and config.ratios is None else " (blocks/ratios subset)"
        reading = "" if space.reading == DEFAULT_READING else f", reading {space.reading}"
        raise ValueError(f"{name}: [{low:,.0f}, {high:,.0f}] reaches no architecture: the {space.dataset} "
                         f"space at width {space.width_multiplier}{reading}{subset} spans {lo:,}-{hi:,} {unit}")


def check_param_range(config: NSGA2Config, space: SpaceConfig) -> None:
    """``ValueError`` if ``config.param_range`` reaches no architecture of the searched space
    (exact bounds from the parameter table; the repair could never succeed)."""
    from search_space.params import param_table  # lazy: only a param_range needs the table

    _check_range("param_range", config.param_range, param_table, config, space, "parameters")


def check_flops_range(config: NSGA2Config, space: SpaceConfig) -> None:
    """:func:`check_param_range` for ``config.flops_range`` (exact bounds from the FLOPs table)."""
    from search_space.flops import flop_table

    _check_range("flops_range", config.flops_range, flop_table, config, space, "FLOPs")


def table_flops_fn(space: SpaceConfig) -> Callable[[Architecture], float]:
    """Architecture -> exact FLOPs of one image of ``space`` (the FLOPs table)."""
    from search_space.flops import flop_table

    table = flop_table(space)

    def flops_fn(arch: Architecture) -> float:
        return float(table.count(arch))

    return flops_fn


def table_params_fn(space: SpaceConfig) -> Callable[[Architecture], float]:
    """Architecture -> exact parameter count of ``space`` (the parameter table)."""
    from search_space.params import param_table

    table = param_table(space)

    def params_fn(arch: Architecture) -> float:
        return float(table.count(arch))

    return params_fn
