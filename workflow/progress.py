"""Progress of a running NNI experiment, printed while the pipeline waits on it.

One line whenever something changes, and at least every ``heartbeat`` seconds::

    search: 10/24 trials done (2 running, 0 failed), generation 0, hypervolume 0.2817, 3m05s

Trial counts come from NNI's REST API; a failed trial is reported once, as it happens, with the
folder of its logs; the generation and hypervolume come from the tuner's ``history.csv`` in the
experiment directory (polled; absent until the first generation is complete).
"""

from __future__ import annotations

import csv
import logging
import time
import urllib.error
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from . import nnictl

logger = logging.getLogger(__name__)

FINISHED_TRIAL_STATUSES = ("SUCCEEDED", "FAILED", "USER_CANCELED", "SYS_CANCELED", "EARLY_STOPPED")
FAILED_TRIAL_STATUSES = ("FAILED", "SYS_CANCELED")


def elapsed(seconds: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def last_generation(history: Path) -> tuple[int, float] | None:
    """(generation, hypervolume) of the last complete row of the tuner's ``history.csv``, if any."""
    try:
        with open(history, newline="") as f:
            rows = list(csv.DictReader(f))
    except OSError:
        return None
    for row in reversed(rows):
        try:
            return int(row["generation"]), float(row["hypervolume"])
        except (KeyError, TypeError, ValueError):
            continue  # a row being written
    return None


def trial_log_dir(job: Mapping[str, Any], experiment_dir: Path | None) -> str:
    """Where NNI keeps a trial's stdout/stderr (its ``logPath``, else ``<experiment>/trials/<id>``)."""
    path = str(job.get("logPath") or "")
    if path.startswith("file://"):
        path = path.split(":", 2)[-1] if path.count(":") >= 2 else path[len("file://"):]
    if path:
        return path
    return str(experiment_dir / "trials" / str(job.get("trialJobId"))) if experiment_dir else "?"


class ExperimentProgress:
    """``on_poll`` callback of :func:`workflow.nnictl.wait` that logs the experiment's progress."""

    def __init__(self, stage: str, port: int, total: int | None, experiment_dir: Path | None = None, *,
                 heartbeat: float = 30.0) -> None:
        self.stage, self.port, self.total, self.experiment_dir = stage, port, total, experiment_dir
        self.heartbeat = heartbeat
        self.started = time.time()
        self._last_line, self._last_time = "", 0.0
        self._reported_failures: set[str] = set()
        self._status: str | None = None

    def __call__(self, status: Mapping[str, Any]) -> None:
        if status.get("status") != self._status:
            self._status = status.get("status")
            logger.info("%s: experiment %s", self.stage, self._status)
        try:
            jobs = nnictl.trial_jobs(self.port)
        except (urllib.error.URLError, ConnectionError, TimeoutError, ValueError) as e:
            logger.debug("trial jobs not readable yet: %s", e)
            return
        self._failures(jobs)
        line = self.line(jobs)
        now = time.time()
        if line != self._last_line or now - self._last_time >= self.heartbeat:
            logger.info("%s, %s", line, elapsed(now - self.started))
            self._last_line, self._last_time = line, now

    def line(self, jobs: Sequence[Mapping[str, Any]]) -> str:
        """``search: 10/24 trials done (2 running, 1 failed), generation 0, hypervolume 0.2817``."""
        counts = nnictl.trial_counts(self.port, jobs)
        done = sum(counts.get(s, 0) for s in FINISHED_TRIAL_STATUSES)
        failed = sum(counts.get(s, 0) for s in FAILED_TRIAL_STATUSES)
        total = self.total if self.total is not None else "?"
        text = (f"{self.stage}: {done}/{total} trials done ({counts.get('RUNNING', 0)} running, "
                f"{failed} failed)")
        if self.experiment_dir is not None:
            last = last_generation(self.experiment_dir / "history.csv")
            if last is not None:
                text += f", generation {last[0]}, hypervolume {last[1]:.4f}"
        return text

    def _failures(self, jobs: Sequence[Mapping[str, Any]]) -> None:
        for job in jobs:
            trial = str(job.get("trialJobId"))
            if job.get("status") in FAILED_TRIAL_STATUSES and trial not in self._reported_failures:
                self._reported_failures.add(trial)
                logger.warning("%s: trial %s %s; its logs: %s", self.stage, trial, job.get("status"),
                               trial_log_dir(job, self.experiment_dir))
