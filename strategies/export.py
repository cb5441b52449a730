"""Recompute the front of a finished (or running) nnictl experiment.

Input is an experiment (id or directory; read from NNI's database, see :func:`fetch_export`) or
what ``nnictl experiment export ID --type json`` writes: succeeded trials as
``{"parameter": sample, "value": "<JSON string of the metric dict>", "trialJobId": id}``.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from search_space.architecture import Architecture, Objective
from search_space.files import read_json, read_space
from search_space.space import ArchitectureError, SpaceConfig

from .objectives import extract_objectives, objective_matrix
from .operators import fast_non_dominated_sort
from .record import SUPERNET_KEY, apply_supernet_record, space_from_class_args

_logger = logging.getLogger(__name__)


def read_export_file(path: str | os.PathLike) -> list[dict[str, Any]]:
    data = read_json(path, error=ValueError)
    if not isinstance(data, list):
        raise ValueError(f"{path}: expected a list of trials (nnictl experiment export --type json)")
    _logger.warning("%s: NNI's export can pair a trial's result with another trial's parameters when "
                    "trials start together; pass the experiment id or directory instead for exact pairing", path)
    return data


def experiment_dir(experiment: str | os.PathLike) -> Path:
    """The directory of an NNI experiment: a path to it, or an id from nnictl's registry."""
    path = Path(experiment)
    if (path / "db" / "nni.sqlite").exists():
        return path
    from nni.tools.nnictl.config_utils import Experiments

    info = Experiments().get_all_experiments().get(str(experiment))
    if info is None:
        raise ValueError(f"{experiment}: neither an experiment directory (with db/nni.sqlite) nor an "
                         "experiment id known to nnictl (see `nnictl experiment list --all`)")
    log_dir = Path(info.get("logDir") or Path.home() / "nni-experiments")
    path = log_dir / str(experiment)
    if not (path / "db" / "nni.sqlite").exists():
        raise ValueError(f"experiment {experiment!r}: no database at {path / 'db' / 'nni.sqlite'}")
    return path


def query_db(db: str | os.PathLike, *queries: str) -> list[list[tuple]]:
    """The rows of each query on NNI's database, opened read-only (a running experiment keeps
    writing it); ``ValueError`` naming the file if it cannot be read."""
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=30)
        try:
            return [con.execute(q).fetchall() for q in queries]
        finally:
            con.close()
    except sqlite3.Error as e:
        raise ValueError(f"{db}: cannot read NNI's database ({e})") from None


def experiment_space(experiment: str | os.PathLike) -> SpaceConfig | None:
    """The space an experiment searched: its tuner's ``dataset``/``width_multiplier`` classArgs or the
    record its ``supernet`` classArg names (from NNI's database), else the ``space`` of the ``front.json`` the tuner wrote; ``None`` if neither."""
    directory = experiment_dir(experiment)
    try:
        (rows,) = query_db(directory / "db" / "nni.sqlite",
                           "SELECT params FROM ExperimentProfile ORDER BY revision DESC LIMIT 1")
    except ValueError:
        rows = []  # no profile table (e.g. a hand-made database): fall back on front.json
    tuner = (json.loads(rows[0][0]) or {}).get("tuner") if rows and rows[0][0] else None
    args = (tuner or {}).get("classArgs") or {}
    if SUPERNET_KEY in args:  # the space came from the supernet record (strategies.record)
        try:
            args = apply_supernet_record(args, (tuner or {}).get("codeDirectory"))
        except ValueError:
            args = {}  # the record moved or changed since: front.json still says
    if "dataset" in args and "width_multiplier" in args:
        try:
            return space_from_class_args(args)
        except ArchitectureError as e:
            raise ArchitectureError(f"{directory}: tuner.classArgs.{e}") from None
    front = directory / "front.json"
    return read_space(front) if front.exists() else None


def fetch_export(experiment: str | os.PathLike) -> list[dict[str, Any]]:
    """Trials with a final result of an experiment (running or stopped), read from NNI's database.

    Same entries as ``nnictl experiment export`` plus ``parameterId``, but each result is paired
    with the parameters *of the parameter id the trial reported*. NNI's own export (and its web
    UI) pair a result with the parameters recorded for the trial job, and NNI 3.0's local and
    remote training services hand queued parameters to whichever trial asks first, so trials
    started together can get each other's (README, Known limits).
    """
    db = experiment_dir(experiment) / "db" / "nni.sqlite"
    events, finals = query_db(db, "SELECT data FROM TrialJobEvent WHERE data IS NOT NULL",
                              "SELECT trialJobId, parameterId, data FROM MetricData WHERE type = 'FINAL' "
                              "ORDER BY timestamp")
    parameters: dict[int, Any] = {}
    for (data,) in events:
        record = json.loads(data)
        if isinstance(record, dict) and "parameter_id" in record and record.get("parameters") is not None:
            parameters[int(record["parameter_id"])] = record["parameters"]
    entries = []
    for trial_id, parameter_id, data in finals:
        if parameter_id is None or int(parameter_id) not in parameters:
            _logger.warning("%s: trial %s reported for unknown parameter id %r; skipped", db, trial_id, parameter_id)
            continue
        entries.append({"parameter": parameters[int(parameter_id)], "value": json.loads(data),
                        "trialJobId": trial_id, "parameterId": int(parameter_id)})
    return entries


TRIAL_STATUSES = ("WAITING", "RUNNING", "SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED")


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
        archs.setdefault(arch.key, arch.with_info(obj, {"trial_id": prov["trialJobId"]} if prov else {}))
    items = list(archs.values())
    if not items:
        return []
    F = objective_matrix([a.objectives for a in items], objectives)
    return [items[i] for i in fast_non_dominated_sort(F)[0]]
