"""NNI 3.0's manager and local training service, faked around NNI's own ``MsgDispatcher``.

What it reproduces (read from NNI 3.0's nnimanager.js, training_service/v3/compat.js and
nniDataStore.js; docs/architecture.md §8):

- the manager asks for ``concurrency`` trials at start and, each poll, for as many as ended;
- every ``NewTrialJob`` becomes a waiting form; forms are submitted as trial jobs while fewer
  than ``concurrency`` run and fewer than ``max_trials`` were submitted; NNI's database records
  each job with the parameters of *its* form (the *recorded* parameter id);
- the training service keeps the forms' parameters in one FIFO and hands the head to whichever
  started trial asks first, so trials that start together can run each other's parameters;
- a trial reports its final result under the parameter id it *received*; the manager stores a
  metric in the database before it forwards it, and a status change before the trial's end;
- the trial end names the *recorded* parameter id; a killed trial ends USER_CANCELED;
- the dispatcher handles trial ends on another thread than metrics: ``end_first`` delivers a
  trial's end before its (already stored) final result.
"""

from __future__ import annotations

import json
import random
import sqlite3
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_space.architecture import Architecture
from strategies.toy import toy_objectives

NNI_TABLES = """
create table TrialJobEvent (timestamp integer, trialJobId text, event text, data text, logPath text,
    sequenceId integer, message text, environmentId text);
create table MetricData (timestamp integer, trialJobId text, parameterId text, type text, sequence integer,
    data text);
create table ExperimentProfile (params text, id text, execDuration integer, startTime integer, endTime integer,
    logDir text, nextSequenceId integer, revision integer);
"""


class NNIDatabase:
    """``<experiment dir>/db/nni.sqlite`` written as NNI's manager writes it."""

    def __init__(self, exp_dir: Path):
        self.exp_dir = exp_dir
        self.path = exp_dir / "db" / "nni.sqlite"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists()
        self.con = sqlite3.connect(self.path, check_same_thread=False)
        if new:
            self.con.executescript(NNI_TABLES)
        self.clock = max(self.con.execute(f"SELECT COALESCE(MAX(timestamp), 0) FROM {t}").fetchone()[0]
                         for t in ("TrialJobEvent", "MetricData"))

    def _tick(self) -> int:
        self.clock += 1
        return self.clock

    def event(self, trial_id: str, event: str, data: str | None = None) -> None:
        log_path = str(self.exp_dir / "environments" / "local-env" / "trials" / trial_id)
        self.con.execute("INSERT INTO TrialJobEvent VALUES (?, ?, ?, ?, ?, NULL, NULL, 'local-env')",
                         (self._tick(), trial_id, event, data, log_path))
        self.con.commit()

    def metric(self, trial_id: str, pid: int | None, value: Any, kind: str = "FINAL", sequence: int = 0) -> None:
        """``value`` as the trial sends it (its JSON string); NNI stores that string JSON-encoded again."""
        self.con.execute("INSERT INTO MetricData VALUES (?, ?, ?, ?, ?, ?)",
                         (self._tick(), trial_id, None if pid is None else str(pid), kind, sequence,
                          json.dumps(value)))
        self.con.commit()

    def close(self) -> None:
        self.con.close()


def toy_metric(arch: Architecture) -> str:
    """The toy trial's final result, JSON-encoded as ``nni.report_final_result`` sends it."""
    m = toy_objectives(arch)
    return json.dumps({"default": m["adv_acc"], **m})


@dataclass
class Job:
    trial_id: str
    recorded: dict  # the form NNI recorded: {"parameter_id", "parameters", ...}
    got: dict | None = None  # what the training service handed it
    fate: str = "ok"  # ok | fail | kill | fail_early (fails before asking for parameters)


class FakeNNI:
    """Drives ``tuner`` through ``nni.runtime.msg_dispatcher.MsgDispatcher`` (module globals reset
    by ``monkeypatch``) as NNI 3.0's manager and local training service would.

    ``fate(job, arch)`` decides what a trial does once it has its parameters (``arch`` is
    ``None`` before): ``"ok"``, ``"fail"``, ``"kill"``, or ``"fail_early"`` (before asking).
    """

    def __init__(self, tuner, exp_dir: Path, monkeypatch, concurrency: int, seed: int = 0,
                 fate: Callable[[Job, Architecture | None], str] | None = None, max_trials: int | None = None,
                 end_first: float = 0.3):
        import nni.runtime.msg_dispatcher as md

        monkeypatch.setattr(md, "_next_parameter_id", 0)
        monkeypatch.setattr(md, "_trial_params", {})
        monkeypatch.setattr(md, "_customized_parameter_ids", set())
        self.md = md
        self.tuner = tuner
        self.d = md.MsgDispatcher("ws://_unittest_", tuner)
        self.d.send = self._on_command
        self.db = NNIDatabase(exp_dir)
        self.concurrency, self.max_trials = concurrency, max_trials
        self.rng = random.Random(seed)
        self.fate = fate or (lambda job, arch: "ok")
        self.end_first = end_first
        self.forms: deque[dict] = deque()  # NewTrialJob forms not yet submitted
        self.fifo: deque[dict] = deque()  # the training service's parameter queue
        self.running: list[Job] = []
        self.submitted = 0
        self.reported: dict[str, dict] = {}  # arch key -> metric dict of every valid result a trial reported
        self.ended: list[Job] = []
        self.reruns: deque[Job] = deque()  # after a resume: interrupted jobs, run again first
        self.no_more = 0  # NoMoreTrialJobs commands seen

    # ---- the manager
    def _on_command(self, cmd, data) -> None:
        if cmd.value == "TR":
            self.forms.append(json.loads(data))
        elif cmd.value == "NO":
            self.no_more += 1

    def start(self) -> None:
        from search_space.space import nni_search_space

        self.tuner.update_search_space(nni_search_space())  # handle_initialize, without its log of the space
        self.d.handle_request_trial_jobs(self.concurrency)
        self._submit()

    def resume(self, tuner, monkeypatch) -> FakeNNI:
        """``nnictl stop`` now (the running trials are interrupted; their jobs stay RUNNING in the
        database) and ``nnictl resume`` with a new ``tuner`` process, as NNI 3.0 does it: the tuner
        loads its checkpoint; finished trials are replayed with the parameters NNI *recorded* for
        them (nniDataStore.exportTrialHpConfigs); the interrupted jobs run again under their old
        ids with their recorded parameters, their results reach import_data and their ends are
        dropped; new parameter ids continue after the largest resumed one."""
        new = FakeNNI(tuner, self.db.exp_dir, monkeypatch, self.concurrency, self.rng.randrange(1 << 30),
                      self.fate, self.max_trials, self.end_first)
        interrupted = list(self.running)
        new.submitted = self.submitted - len(interrupted)
        new.reported = dict(self.reported)
        new.d.load_checkpoint()
        replay = []
        for job in self.ended:
            rows = new.db.con.execute("SELECT data FROM MetricData WHERE trialJobId = ? AND type = 'FINAL'",
                                      (job.trial_id,)).fetchall()
            if len(rows) == 1:
                replay.append({"parameter": job.recorded["parameters"], "value": json.loads(rows[0][0]),
                               "trialJobId": job.trial_id})
        new.d.handle_import_data(replay)
        new.d.handle_add_customized_trial([{**j.recorded, "parameter_source": "resumed"} for j in interrupted])
        new.reruns = deque(Job(j.trial_id, j.recorded, got=j.recorded) for j in interrupted)
        new.d.handle_request_trial_jobs(self.concurrency)
        new._submit()
        return new

    def _submit(self) -> None:
        while self.reruns and len(self.running) < self.concurrency:
            job = self.reruns.popleft()
            job.fate = self.fate(job, Architecture.from_sample(job.got["parameters"]))
            self.submitted += 1
            self.db.event(job.trial_id, "RUNNING")
            self.running.append(job)
        while self.forms and len(self.running) < self.concurrency and \
                (self.max_trials is None or self.submitted < self.max_trials):
            form = self.forms.popleft()
            job = Job(f"T{self.submitted}", form)
            self.submitted += 1
            self.fifo.append(form)
            self.db.event(job.trial_id, "RUNNING", json.dumps(form))
            self.running.append(job)

    def _ask(self, job: Job) -> None:
        job.got = self.fifo.popleft()

    def _end(self, job: Job, status: str, metric: str | None) -> None:
        """Store, then forward: the final result (if any) and the end, possibly end first."""
        self.running.remove(job)
        self.ended.append(job)
        pid = job.got["parameter_id"] if job.got else None
        report = {"parameter_id": pid, "trial_job_id": job.trial_id, "type": "FINAL", "sequence": 0,
                  "value": metric}
        if metric is not None:
            self.db.metric(job.trial_id, pid, metric)
        self.db.event(job.trial_id, status)
        end = {"trial_job_id": job.trial_id, "event": status, "hyper_params": json.dumps(job.recorded)}
        if metric is not None and self.rng.random() >= self.end_first:
            self.d.handle_report_metric_data(report)
            metric = None
        self.d.handle_trial_end(end)
        if metric is not None:
            self.d.handle_report_metric_data(report)

    def _finish(self, job: Job) -> None:
        if job.got is None:  # fails before asking: its parameters stay queued for the next trial
            job.fate = "fail_early"
            self._end(job, "FAILED", None)
            return
        arch = Architecture.from_sample(job.got["parameters"])
        if job.fate == "ok":
            self.reported[arch.key] = json.loads(toy_metric(arch))
            self._end(job, "SUCCEEDED", toy_metric(arch))
        else:
            self._end(job, "USER_CANCELED" if job.fate == "kill" else "FAILED", None)

    def step(self) -> bool:
        """One poll: a started trial asks for its parameters, or one or two trials end (then the
        manager asks for as many new ones in one request)."""
        self._submit()
        if not self.running:
            return False
        job = self.rng.choice(self.running)
        if job.got is None and self.fate(job, None) != "fail_early":
            self._ask(job)
            job.fate = self.fate(job, Architecture.from_sample(job.got["parameters"]))
            return True
        ending = [job]
        others = [j for j in self.running if j is not job and j.got is not None]
        if others and self.rng.random() < 0.3:
            ending.append(self.rng.choice(others))
        for j in ending:
            self._finish(j)
        self.d.handle_request_trial_jobs(len(ending))
        return True

    def run(self, max_steps: int = 100_000) -> None:
        for _ in range(max_steps):
            if not self.step():
                return
        raise AssertionError("the fake NNI did not finish")
