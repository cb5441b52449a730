"""What the NSGA-II tuner reads from NNI's own records, and the one REST call it makes.

NNI 3.0 keeps every trial job in ``<experiment dir>/db/nni.sqlite`` (docs/architecture.md §8):

- ``TrialJobEvent``: one row per status change; the first row of a job carries the parameters
  NNI *recorded* for it (the tuner's ``{"parameter_id", "parameters", ...}`` message) and the
  trial directory (``logPath``). NNI's local and remote training services hand queued
  parameters to whichever trial asks first, so a job may run another job's recorded parameters.
- ``MetricData``: every metric a trial reported, with the parameter id the trial *reported*
  (the one it ran) and the value as NNI stored it (a JSON string of the trial's JSON string).

:class:`TrialRecords` is one read of both tables. The manager stores a metric before it forwards
it to the dispatcher, and a status change before it sends the trial's end, so when the tuner
hears of an end, the records already hold whatever that trial reported.
"""

from __future__ import annotations

import json
import logging
import os
import urllib.parse
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from search_space.architecture import Architecture, Objective
from search_space.space import ArchitectureError

from .export import TRIAL_STATUSES, query_db
from .objectives import extract_objectives

_logger = logging.getLogger(__name__)

ENDED = ("SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED")
TAIL_CHARS = 2000  # how much of a failed trial's stderr a failure reason keeps


def decode_metric(data: Any) -> Any:
    """A metric value as NNI stores or sends it (JSON, possibly JSON-encoded twice) -> the metric dict."""
    for _ in range(3):
        if not isinstance(data, str):
            return data
        try:
            data = json.loads(data)
        except ValueError:
            return data
    return data


def key_of(parameters: Any) -> str | None:
    """The architecture key of an NNI sample, or ``None`` if it is not one."""
    try:
        return Architecture.from_sample(parameters).key
    except (ArchitectureError, TypeError, ValueError):
        return None


@dataclass
class TrialRecords:
    """One read of NNI's database: trial jobs, what NNI recorded for them and what they reported."""

    status: dict[str, str | None] = field(default_factory=dict)  # trial id -> latest status
    recorded: dict[str, tuple[int | None, Any]] = field(default_factory=dict)  # trial id -> (pid, parameters)
    log_path: dict[str, str] = field(default_factory=dict)  # trial id -> trial directory
    finals: dict[str, list[tuple[int | None, Any]]] = field(default_factory=dict)  # trial id -> [(pid, value)]
    reported: dict[str, set[int]] = field(default_factory=dict)  # trial id -> pids of all its metrics
    by_pid: dict[int, list[str]] = field(default_factory=dict)  # recorded pid -> trial ids (several after a resume)

    @classmethod
    def read(cls, db: str | os.PathLike) -> TrialRecords:
        """``ValueError`` naming the file if the database cannot be read."""
        events, metrics = query_db(
            db, "SELECT trialJobId, event, data, logPath FROM TrialJobEvent ORDER BY timestamp, rowid",
            "SELECT trialJobId, parameterId, type, data FROM MetricData ORDER BY timestamp, rowid")
        r = cls()
        for trial_id, event, data, log_path in events:
            if not trial_id:
                continue  # IMPORT_DATA and customized-trial events carry no trial job
            r.status.setdefault(trial_id, None)
            if event in TRIAL_STATUSES:
                r.status[trial_id] = event
            if log_path and trial_id not in r.log_path:
                r.log_path[trial_id] = log_path
            if data and trial_id not in r.recorded:
                record = decode_metric(data)
                if isinstance(record, dict) and "parameters" in record:
                    pid = record.get("parameter_id")
                    pid = pid if isinstance(pid, int) else None
                    r.recorded[trial_id] = (pid, record["parameters"])
                    if pid is not None:
                        r.by_pid.setdefault(pid, []).append(trial_id)
        for trial_id, pid, kind, data in metrics:
            pid = _int(pid)
            if pid is not None:
                r.reported.setdefault(trial_id, set()).add(pid)
            if kind == "FINAL":
                r.finals.setdefault(trial_id, []).append((pid, decode_metric(data)))
        return r

    def job_of(self, pid: int) -> str | None:
        """The trial job NNI recorded parameter id ``pid`` for (the job a trial end names)."""
        jobs = self.by_pid.get(pid)
        return jobs[-1] if jobs else None

    def keys_of_pid(self, pid: int) -> set[str]:
        """Architectures recorded under ``pid`` (one, unless ids were reused across a resume)."""
        keys = {key_of(self.recorded[t][1]) for t in self.by_pid.get(pid, ())}
        return {k for k in keys if k is not None}

    def recorded_key(self, trial_id: str) -> str | None:
        return key_of(self.recorded.get(trial_id, (None, None))[1])

    def final_results(self, objectives: Sequence[Objective]) -> list[tuple[str, str, dict[str, float]]]:
        """``(trial id, architecture key, objectives)`` of every final result, the architecture being
        the one of the parameter id the trial *reported*; unusable values are left out."""
        out = []
        for trial_id, rows in self.finals.items():
            for pid, value in rows:
                try:
                    obj = extract_objectives(value, objectives)
                except ValueError:
                    continue
                for key in self.keys_of_pid(pid) if pid is not None else ():
                    out.append((trial_id, key, obj))
        return out


    def verify(self, entry: Any, objectives: Sequence[Objective],
               known: list[tuple[str, str, dict[str, float]]] | None = None) -> tuple[str, str, dict[str, float]]:
        """``(trial id, architecture key, objectives)`` of an imported entry (``{"parameter", "value"[,
        "trialJobId"]}``) if a trial's final result in the database is that value; the architecture is
        the one the trial *reported* (NNI's own replay pairs the *recorded* one). ``ValueError`` why
        not. ``known``: :meth:`final_results`, when many entries are checked."""
        try:
            key = Architecture.from_sample(entry["parameter"]).key
            values = extract_objectives(decode_metric(entry["value"]), objectives)
        except (ArchitectureError, ValueError, KeyError, TypeError) as e:
            raise ValueError(f"not a result of this search ({e})") from None
        trial_id = entry.get("trial_job_id") or entry.get("trialJobId")
        known = self.final_results(objectives) if known is None else known
        matches = [(t, k) for t, k, o in known if o == values and (t == trial_id if trial_id else k == key)]
        if not matches:
            raise ValueError(f"no trial in NNI's database reported this result for {key}"
                             + (f" (trial {trial_id})" if trial_id else ""))
        trial_id, reported = next(((t, k) for t, k in matches if k == key), matches[0])
        if reported != key:
            _logger.info("trial %s's result came paired with %s; the trial reported %s", trial_id, key, reported)
        return trial_id, reported, values

    def at_stop(self, pending: set[str]) -> tuple[dict[str, str], list[tuple[str, str, str]]]:
        """For the pending proposals at a resume: ``{key: trial id}`` of the trials WAITING or RUNNING
        at the stop (NNI runs them again), and ``(key, trial id, status)`` of those recorded on a
        trial that had ended (without a result, or it would not be pending)."""
        running, ended = {}, []
        for trial_id, status in self.status.items():
            key = self.recorded_key(trial_id)
            if key in pending and status in ("WAITING", "RUNNING"):
                running[key] = trial_id
            elif key in pending and status in ENDED:
                ended.append((key, trial_id, status))
        return running, [e for e in ended if e[0] not in running]


def _int(v: Any) -> int | None:
    try:
        return int(v)
    except (TypeError, ValueError):
        return None


def failure_reason(records: TrialRecords, trial_id: str, experiment_dir: Path | None) -> str:
    """The last lines of a failed trial's stderr (its ``trial.log`` when stderr is empty), one string."""
    dirs = [Path(records.log_path[trial_id])] if trial_id in records.log_path else []
    if experiment_dir is not None:
        dirs += [experiment_dir / "trials" / trial_id, *sorted(experiment_dir.glob(f"environments/*/trials/{trial_id}"))]
    for d in dirs:
        for name in ("trial.stderr", "stderr", "trial.log"):
            try:
                text = (d / name).read_text(errors="replace").strip()
            except OSError:
                continue
            if text:
                return f"trial {trial_id} ({d / name}): ...{text[-TAIL_CHARS:]}" if len(text) > TAIL_CHARS \
                    else f"trial {trial_id} ({d / name}): {text}"
    return f"trial {trial_id} ended {records.status.get(trial_id)} and left no stderr"


def first_failure(records: TrialRecords | None, pid: int | None, experiment_dir: Path | None) -> str:
    """Why the trial job recorded under ``pid`` failed (:func:`failure_reason`); ``None``: no job failed."""
    if pid is None:
        return "every trial exited 0 without a final result (does the trial call nni.report_final_result?)"
    job = records.job_of(pid) if records is not None else None
    if job is None:
        return f"the trial recorded under parameter id {pid} failed (no NNI database to find its stderr)"
    return failure_reason(records, job, experiment_dir)  # type: ignore[arg-type]


def end_experiment(trials: int, timeout: float = 10.0) -> bool:
    """Make NNI's manager end the experiment: set its ``maxTrialNumber`` to ``trials`` (what
    ``nnictl update trialnum`` does through the REST API). The manager then submits no more
    trials and, once the running ones end, marks the experiment DONE. The address is the one NNI
    gave the dispatcher (``NNI_TUNER_COMMAND_CHANNEL``). Returns False (logged) if that fails."""
    channel = os.environ.get("NNI_TUNER_COMMAND_CHANNEL", "")
    url = urllib.parse.urlsplit(channel)
    if url.scheme not in ("ws", "wss") or not url.path.endswith("/tuner"):
        _logger.warning("NSGA2Tuner: no NNI manager address (NNI_TUNER_COMMAND_CHANNEL=%r); cannot end the "
                        "experiment: stop it with nnictl stop", channel)
        return False
    scheme = "https" if url.scheme == "wss" else "http"
    api = f"{scheme}://{url.netloc}{url.path[: -len('/tuner')]}/api/v1/nni/experiment"
    try:
        with urllib.request.urlopen(api, timeout=timeout) as resp:
            profile = json.loads(resp.read())
        profile["params"]["maxTrialNumber"] = max(1, int(trials))
        req = urllib.request.Request(f"{api}?update_type=MAX_TRIAL_NUM", data=json.dumps(profile).encode(),
                                     method="PUT", headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=timeout):
            pass
    except (OSError, ValueError, KeyError, TypeError) as e:
        _logger.warning("NSGA2Tuner: could not end the experiment through %s (%s): stop it with nnictl stop", api, e)
        return False
    _logger.info("NSGA2Tuner: maxTrialNumber set to %d: NNI ends the experiment when the running trials end",
                 max(1, int(trials)))
    return True
