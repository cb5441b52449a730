"""The tuner's ``supernet`` classArg: the search's space, blocks, ratios and ranges from the supernet record.

With ``supernet: RUN_DIR`` (a supernet run directory, or its ``supernet.json``;
:mod:`search_space.record`) the tuner derives ``dataset``, ``width_multiplier``, ``reading``, ``blocks``,
``ratios``, ``param_range`` and ``hv_bounds.params`` from what that supernet trained (the last
phase it trained: its ratios and parameter range; see :meth:`SupernetRecord.search_space_args`).
A classArg given as well may *narrow* the record, never contradict it:

- ``dataset``, ``width_multiplier``, ``reading``: equal to the record's (the parameter and FLOPs
  tables of the repair and the objectives follow the reading);
- ``blocks``, ``ratios``: a subset of what the supernet trained;
- ``param_range``: inside the trained range;
- ``hv_bounds.params``: covering the searched ``param_range`` (points outside the bounds would add
  nothing to the hypervolume).

Anything else is one ``ValueError`` naming ``classArgs.<key>``, both values and the record file.
A relative ``supernet`` path is taken from ``base_dir``, by default the working directory. NNI
starts the tuner in ``<experiment dir>/log``, not in ``tuner.codeDirectory``: the tuner takes a
relative path from the repository root it is imported from (``strategies.tuner.CODE_ROOT``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from search_space.record import RecordError, SupernetRecord
from search_space.space import DEFAULT_READING, SpaceConfig

logger = logging.getLogger(__name__)

SUPERNET_KEY = "supernet"
READING_KEY = "reading"
_PREFIX = "NSGA2Tuner classArgs"


def space_from_class_args(args: Mapping[str, Any]) -> SpaceConfig:
    """The searched space of (record-resolved) classArgs: ``dataset``, ``width_multiplier`` and
    ``reading`` (optional: the default reading)."""
    return SpaceConfig.for_dataset(args["dataset"], args["width_multiplier"], args.get(READING_KEY, DEFAULT_READING))


def apply_supernet_record(class_args: Mapping[str, Any], base_dir: str | os.PathLike | None = None
                          ) -> dict[str, Any]:
    """``class_args`` with ``supernet`` replaced by what its record implies (see the module docstring).

    Without a ``supernet`` key the classArgs are returned unchanged.
    """
    args = dict(class_args)
    if SUPERNET_KEY not in args:
        return args
    value = args.pop(SUPERNET_KEY)
    if not isinstance(value, (str, os.PathLike)) or not str(value):
        raise ValueError(f"{_PREFIX}.{SUPERNET_KEY}: expected the supernet run directory or its supernet.json, "
                         f"got {value!r}")
    try:
        record = SupernetRecord.load(value, base_dir)
        derived = record.search_space_args()
    except RecordError as e:
        raise ValueError(f"{_PREFIX}.{SUPERNET_KEY}: {e}") from None
    where = record.where
    for key in ("dataset", "width_multiplier", "reading"):
        if key in args and args[key] != derived[key]:
            _contradiction(key, args[key], derived[key], where, "the supernet's")
        args[key] = derived[key]
    for key in ("blocks", "ratios"):
        if key in args:
            _check_subset(key, args[key], derived[key], where)
        else:
            args[key] = derived[key]
    if args.get("param_range") is not None:
        _check_inside(args["param_range"], derived["param_range"], where)
    else:
        args["param_range"] = derived["param_range"]
    args["hv_bounds"] = _hv_bounds(args.get("hv_bounds"), args["param_range"], where)
    logger.info("supernet record %s: %s width %s, reading %s, blocks %s, ratios %s, param_range %s", where,
                args["dataset"], args["width_multiplier"], args["reading"], args["blocks"] or "all",
                args["ratios"] or "all", args["param_range"])
    return args


def _contradiction(key: str, given: Any, recorded: Any, where: str, what: str) -> None:
    raise ValueError(f"{_PREFIX}.{key}: {given!r} contradicts the supernet record {where} ({what}: {recorded!r}); "
                     f"drop {key} to use the record's, or train the supernet you mean to search")


def _check_subset(key: str, given: Any, recorded: list | None, where: str) -> None:
    """``given`` (None: all) must lie within ``recorded`` (None: all); values are validated later."""
    if recorded is None:
        return
    if given is None:
        _contradiction(key, given, recorded, where, f"the supernet trained only these {key}; null means all")
    try:
        outside = sorted({float(v) for v in given} - {float(v) for v in recorded})
    except (TypeError, ValueError):
        return  # not a list of numbers: NSGA2Config names the problem
    if outside:
        _contradiction(key, given, recorded, where, f"the supernet never trained {outside}; it trained")


def _check_inside(given: Any, recorded: list[float], where: str) -> None:
    try:
        low, high = (float(x) for x in given)
    except (TypeError, ValueError):
        return  # NSGA2Config names the problem
    if low < recorded[0] or high > recorded[1]:
        _contradiction("param_range", given, recorded, where, "the supernet trained subnets in")


def _hv_bounds(given: Any, param_range: Any, where: str) -> Any:
    """``hv_bounds`` with ``params`` set to the searched range unless given; a given one must cover it."""
    if given is None:
        given = {}
    if not isinstance(given, Mapping):
        return given  # NSGA2Config names the problem
    try:
        low, high = (float(x) for x in param_range)
    except (TypeError, ValueError):
        return dict(given)
    if "params" not in given:
        return {**given, "params": [low, high]}
    try:
        b_low, b_high = (float(x) for x in given["params"])
    except (TypeError, ValueError):
        return dict(given)
    if b_low > low or b_high < high:
        raise ValueError(f"{_PREFIX}.hv_bounds.params: {list(given['params'])!r} does not cover the searched "
                         f"param_range {[low, high]!r} (from the supernet record {where}): the hypervolume would "
                         "ignore part of the front; drop hv_bounds.params to use the param_range")
    return dict(given)
