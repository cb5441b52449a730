"""NNI tuner adapter for NSGA-II (docs/architecture.md §8): generational search over asynchronous trials.

Use it from an nnictl config::

    tuner:
      codeDirectory: .
      className: strategies.tuner.NSGA2Tuner
      classArgs: {dataset: cifar10, width_multiplier: 2, population_size: 50, offspring_size: 50,
                  generations: 20, seed: 0}
      # optional: search a subset, e.g. what a quick supernet trained
      # classArgs: {..., blocks: [0, 3, 6, 18], ratios: [0.8, 1.0, 1.2]}

or, after ``nnictl algo register --meta strategies/nsga2_meta.yml``, as
``tuner: {name: TamNasNSGA2, classArgs: {...}}``.

How the NNI 3.0 protocol is used (measured, docs/architecture.md §8):

- The manager asks for ``trialConcurrency`` parameter ids at start and one per finished
  trial. When the current generation has nothing left to hand out, an id is kept as a
  *credit* (NNI treats it as ``NoMoreTrialError``) and used later through the
  ``st_callback`` of :meth:`generate_multiple_parameters` once the next generation starts.
  Any concurrency works: 1, below, equal to or above the population size.
- A generation's proposals are drawn when it starts (seeded per generation), so the proposals
  do not depend on concurrency or arrival order; :func:`strategies.runner.run_search` gives
  the same front.
- Results are keyed by architecture, paired by the parameter id the trial *reported*; a
  trial end names the id NNI *recorded* for the job, which can be another architecture's, so
  an end is never charged to an architecture: a generation's hand-outs without a result once
  all its trials have ended are the failed ones (:mod:`strategies.ledger`). A failed
  architecture is never proposed again nor replaced; a result for one that was counted failed
  is still accepted while its generation is open, else kept as late (``NSGA2Search.late``).
- NNI's ``NoMoreTrialJobs`` reply (fewer proposals than ids) blanks the *first* id's
  parameters to ``''``; the result still maps to the architecture handed out under that id.
- ``receive_trial_result`` and ``trial_end`` come from two dispatcher threads: one lock.
- State is saved atomically after every result under ``get_checkpoint_path()`` and restored
  by :meth:`load_checkpoint`, which reads NNI's database (``<experiment dir>/db/nni.sqlite``):
  results the tuner missed, the trials WAITING or RUNNING at the stop (NNI runs them again
  under their old ids, their results come through ``import_data`` and their ends are
  dropped; they are not handed out again), and proposals whose trial ended without a result
  (failed). A resumed search needs no trial beyond ``maxTrialNumber``.
- ``import_data`` (the resume replay, NNI's re-runs, and anyone who reaches NNI's REST port)
  accepts only results NNI's database holds as a trial's final result.
- Fail fast: when the first ``fail_fast_trials`` trials all end without a valid result, the
  tuner hands out nothing more, writes the first failure's stderr tail to ``failure.txt`` (and
  the state, and the dispatcher log) and sets the experiment's ``maxTrialNumber`` to the
  trials started, so NNI ends it as DONE.
- After the last generation the tuner hands out nothing more; set ``maxTrialNumber`` to
  ``population_size + generations * offspring_size`` so the experiment ends as DONE.

Each completed generation rewrites ``front.json`` and ``history.csv`` in the experiment
directory (or ``output_dir``).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections import deque
from collections.abc import Callable
from pathlib import Path
from typing import Any

import nni
from nni.tuner import Tuner

from search_space.architecture import Architecture
from search_space.files import atomic_write_text
from search_space.space import check_search_space

from .class_args import (  # noqa: F401  (NSGA2ClassArgsValidator is named as strategies.tuner.* in configs)
    NSGA2ClassArgsValidator,
    check_param_range,
    parse_class_args,
    probe_output_dir,
    table_flops_fn,
    table_params_fn,
)
from .config import NSGA2Config
from .ledger import TrialLedger
from .nni_records import ENDED, TrialRecords, end_experiment, first_failure, key_of
from .nsga2 import NSGA2Search, state_config
from .objectives import extract_objectives
from .runner import write_outputs

_logger = logging.getLogger(__name__)

STATE_FILE = "nsga2_state.json"
FAILURE_FILE = "failure.txt"  # written to the output directory when the search fails fast
# NNI starts the tuner in <experiment dir>/log, not in tuner.codeDirectory: a relative classArg
# supernet is taken from the repository root this tuner is imported from (= the codeDirectory).
CODE_ROOT = Path(__file__).resolve().parent.parent
RESULT_GRACE_S = 30.0  # without NNI's database: how long a successful end's result is waited for


class NSGA2Tuner(Tuner):
    """Generational NSGA-II (paper Algorithm 2) as an NNI 3.0 tuner.

    Parameters
    ----------
    dataset, width_multiplier
        Required: the supernet's space (recorded in ``front.json``; used by the parameter counter).
        With ``supernet: RUN_DIR`` they (and the rest of the space) come from its record
        (:mod:`strategies.record`).
    reading : str, optional
        The reading of Table I (README "Model sizes"; default ``default``), which the parameter and
        FLOPs tables follow; with ``supernet`` the record's, and a different one is refused.
    **config
        Every field of :class:`strategies.config.NSGA2Config` under its own name (population_size,
        objectives, param_range, blocks, ratios, fail_fast_trials, ...; defaults are the paper's).
        ``objectives`` may be ``[{"name": "adv_acc", "direction": "max"}, ...]`` or
        ``["adv_acc:max", ...]``; ``param_range`` (paper: 1.61M-2.37M for the 2S supernet) is
        counted with the parameter table of ``dataset``/``width_multiplier``. ``blocks`` and
        ``ratios`` are part of the saved state (a resume with other values is refused).
    output_dir : str, optional
        Where ``front.json``/``history.csv`` (and ``failure.txt``) go; default the experiment
        directory. Checked writable at start.
    params_fn : callable, optional
        Python use only: Architecture -> parameter count, instead of the parameter table.
    """

    def __init__(self, params_fn: Callable[[Architecture], float] | None = None, **class_args: Any) -> None:
        super().__init__()
        if isinstance(class_args.get("supernet"), str) and not os.path.isabs(class_args["supernet"]):
            class_args = {**class_args, "supernet": str(CODE_ROOT / class_args["supernet"])}
        config, self.space, output_dir = parse_class_args(class_args, check_reach=params_fn is None)
        if config.param_range is not None and params_fn is None:
            params_fn = table_params_fn(self.space)
        self._seed_given = config.seed is not None
        self.flops_fn = table_flops_fn(self.space) if config.flops_range is not None else None
        self.search = NSGA2Search(config, params_fn, flops_fn=self.flops_fn)
        self.params_fn = params_fn
        ckpt = self.get_checkpoint_path()
        self.state_path = Path(ckpt) / STATE_FILE if ckpt else None
        self.experiment_dir = Path(ckpt).parent if ckpt else None  # NNI_CHECKPOINT_DIRECTORY: <exp dir>/checkpoint
        self.output_dir = Path(output_dir) if output_dir is not None else self.experiment_dir
        if output_dir is not None:
            probe_output_dir(self.output_dir)
        if self.state_path is None:
            _logger.warning("NSGA2Tuner: no NNI checkpoint directory; state is not persisted")
        # The dispatcher gets no experiment id; the experiment directory is named after it.
        self.experiment_id = os.environ.get("NNI_EXP_ID") or (self.experiment_dir.name if ckpt else None)
        self._db = self.experiment_dir / "db" / "nni.sqlite" if self.experiment_dir else None
        self._queue: deque[str] = deque(self.search.pending())  # proposals not yet handed out
        self._credits: deque[int] = deque()  # parameter ids waiting for the next generation
        self._ledger = TrialLedger()
        self._send: Callable[[int, dict[str, Any]], None] | None = None
        # Resumed experiments: pending architectures whose trial NNI runs again (key -> trial job id).
        self._recovered: dict[str, str] = {}
        self.stopped: str | None = None  # why the search stopped early (fail fast)
        self._first_request = 0  # ids NNI asked for first: its trialConcurrency
        self._timer: threading.Timer | None = None
        # NNI's dispatcher runs trial_end on another thread than results and requests.
        self._lock = threading.RLock()
        _logger.info("NSGA2Tuner: %s, space %s, seed %d", config.to_dict(), self.space.to_dict(), self.search.seed)

    # ---- NNI API
    def update_search_space(self, search_space: dict[str, Any]) -> None:
        check_search_space(search_space)

    def generate_multiple_parameters(self, parameter_id_list: list[int], **kwargs: Any) -> list[dict[str, Any]]:
        """Hand out proposals for a prefix of the ids and keep the rest as credits.

        NNI pairs the returned list with the ids in order, so the proposals go to the first
        ids; the others are answered later through ``st_callback``.
        """
        with self._lock:
            if kwargs.get("st_callback") is not None:
                self._send = kwargs["st_callback"]
            self._check_recovered()  # NNI asks when a trial ended, a re-run one included
            self._first_request = self._first_request or len(parameter_id_list)  # trialConcurrency
            out = []
            for pid in parameter_id_list:
                if self._may_hand_out() and not self._credits:
                    out.append(self._assign(pid))
                else:
                    self._credits.append(pid)
            # A short list makes NNI blank parameter_id_list[0]'s parameters: see _receive.
            return out

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        with self._lock:
            if kwargs.get("st_callback") is not None:
                self._send = kwargs["st_callback"]
            self._check_recovered()
            self._first_request = self._first_request or 1
            if self._may_hand_out() and not self._credits:
                return self._assign(parameter_id)
            self._credits.append(parameter_id)
        raise nni.NoMoreTrialError("waiting for the current generation to finish")

    def receive_trial_result(self, parameter_id: int, parameters: dict[str, Any], value: Any, **kwargs: Any) -> None:
        if kwargs.get("customized"):
            _logger.info("NSGA2Tuner: ignoring customized trial %s", parameter_id)
            return
        with self._lock:
            self._receive(parameter_id, parameters, value, kwargs.get("trial_job_id"))
            self._after_event()

    def _receive(self, parameter_id: int, parameters: Any, value: Any, trial_job_id: str | None) -> None:
        """Pair the result with the architecture handed out under the id the trial *reported*."""
        key = self._ledger.handed.get(parameter_id)
        if key is None:
            _logger.error("NSGA2Tuner: trial %s reported parameter id %s, which this tuner did not hand out; "
                          "ignored", trial_job_id, parameter_id)
            return
        if key_of(parameters) not in (None, key):
            _logger.warning("NSGA2Tuner: trial %s reported parameters of %s under parameter id %s, handed out "
                            "for %s; counting the one handed out", trial_job_id, key_of(parameters), parameter_id,
                            key)
        # NNI's NoMoreTrialJobs reply overwrites an id's parameters with '': the handed-out key holds.
        try:
            objectives = extract_objectives(_metric_dict(value), self.search.config.objectives)
        except ValueError as e:
            _logger.error("NSGA2Tuner: trial %s reported an unusable result (%s); counted as failed",
                          parameter_id, e)
            self._ledger.receive(parameter_id, valid=False)
            self._finish(key, None)
            return
        self._ledger.receive(parameter_id, valid=True)
        prov = {"trial_id": trial_job_id, "parameter_id": parameter_id, "experiment_id": self.experiment_id}
        self._finish(key, objectives, {k: v for k, v in prov.items() if v is not None})

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        """A trial job ended. ``parameter_id`` is the one NNI *recorded* for the job, which may
        be another architecture's: it is never charged with the failure (strategies.ledger)."""
        with self._lock:
            if not self._ledger.end(parameter_id, success):
                return  # handed out before a resume, or a second end
            records = None if success else self._records()
            if not success:
                for q in self._ledger.reported_failures(parameter_id, records):
                    key = self._ledger.handed[q]
                    if self.search.is_pending(key):
                        _logger.warning("NSGA2Tuner: a trial that reported under parameter id %d (%s) ended "
                                        "failed without a final result; counted as failed", q, key)
                        self._finish(key, None)
            self._after_event(records)

    def import_data(self, data: list[dict[str, Any]]) -> None:
        """Results replayed by ``nnictl resume``, NNI's re-runs of interrupted trials, or imported
        through NNI's REST API: only those NNI's database holds as a trial's final result enter,
        with the architecture the trial reported (:meth:`TrialRecords.verify`)."""
        with self._lock:
            records = self._records()
            objectives = self.search.config.objectives
            known = records.final_results(objectives) if records is not None else []
            for entry in data:
                try:
                    if records is None:
                        raise ValueError("no NNI database to check it against")
                    trial_id, key, values = records.verify(entry, objectives, known)
                except ValueError as e:
                    _logger.warning("NSGA2Tuner: refused an imported result: %s (NNI's REST API takes imports "
                                    "from anyone who reaches its port)", e)
                    continue
                self._recovered.pop(key, None)
                if key not in self.search.results and key in self.search.born:  # else replayed again
                    self._finish(key, values, {"trial_id": trial_id})
            self._after_event(records)

    def load_checkpoint(self) -> None:
        if self.state_path is None or not self.state_path.exists():
            _logger.info("NSGA2Tuner: no saved state to resume from")
            return
        with self._lock:
            self._load_checkpoint()

    def _load_checkpoint(self) -> None:
        assert self.state_path is not None
        state = json.loads(self.state_path.read_text())
        saved = NSGA2Config.from_dict(state_config(state)).to_dict()
        now = self.search.config.to_dict()
        # A missing seed was drawn at start: the saved one wins; fail_fast_trials may change; nothing else.
        free = {"seed": None, "fail_fast_trials": None}
        if self._seed_given and now["seed"] != saved["seed"] or {**now, **free} != {**saved, **free}:
            raise ValueError(f"NSGA2Tuner: classArgs differ from the saved state {self.state_path}: "
                             f"saved {saved}, now {now}")
        self.search = NSGA2Search.from_state({**state, "config": {**state_config(state),
                                                                  "fail_fast_trials": now["fail_fast_trials"]}},
                                             self.params_fn, self.flops_fn)
        if state.get("stopped"):
            _logger.warning("NSGA2Tuner: the search had stopped (%s); resumed, it goes on", state["stopped"])
        self._queue = deque(self.search.pending())
        records = self._records()
        if records is not None:
            self._resume_from_records(records)
        self._queue = deque(k for k in self.search.pending() if k not in self._recovered)
        _logger.info("NSGA2Tuner: resumed at generation %d with %d evaluations; %d proposals to hand out, "
                     "%d run again by NNI", self.search.generation, self.search.evaluations, len(self._queue),
                     len(self._recovered))

    def _resume_from_records(self, records: TrialRecords) -> None:
        """What NNI's database knows of the open generation's pending proposals at a resume.

        Results the tuner had not received are taken from it; the trials WAITING or RUNNING at the
        stop, which NNI runs again under their old ids (their ends never reach the tuner), are not
        handed out a second time; a proposal whose trial had ended without a result is counted
        failed (handing it out again would cost trials beyond ``maxTrialNumber``).
        """
        gen = self.search.generation
        for trial_id, key, objectives in records.final_results(self.search.config.objectives):
            if self.search.generation == gen and self.search.is_pending(key):
                self._finish(key, objectives, {"trial_id": trial_id})
        if self.search.generation != gen:
            return
        self._recovered, ended = records.at_stop(set(self.search.pending()))
        for key, trial_id, status in ended:
            if self.search.generation == gen and self.search.is_pending(key):
                _logger.warning("NSGA2Tuner: trial %s (recorded for %s) ended %s before the stop without a "
                                "result for it; counted as failed", trial_id, key, status)
                self._finish(key, None)

    def _check_recovered(self) -> None:
        """A re-run trial that fails sends the tuner nothing: read its end from NNI's database."""
        if not self._recovered:
            return
        records = self._records()
        if records is None:
            return
        for key, trial_id in list(self._recovered.items()):
            status = records.status.get(trial_id)
            if status in ENDED and status != "SUCCEEDED":
                _logger.warning("NSGA2Tuner: resumed trial %s (%s) ended %s; counted as failed", trial_id, key, status)
                del self._recovered[key]
                self._finish(key, None)

    def save_checkpoint(self) -> None:
        if self.state_path is not None:
            state = self.search.to_state()
            if self.stopped:
                state["stopped"] = self.stopped
            atomic_write_text(self.state_path, json.dumps(state) + "\n")

    # ---- internals
    def _records(self) -> TrialRecords | None:
        if self._db is None or not self._db.exists():
            return None
        try:
            return TrialRecords.read(self._db)
        except ValueError as e:
            _logger.warning("NSGA2Tuner: %s", e)
            return None

    def _may_hand_out(self) -> bool:
        """A proposal is waiting, and fail fast does not hold it back: before the first valid
        result, no more than ``fail_fast_trials`` trials are started."""
        n = self.search.config.fail_fast(self._first_request)
        if not self._queue or self.stopped:
            return False
        return not n or bool(self.search.results) or self._ledger.valid > 0 or len(self._ledger.handed) < n

    def _assign(self, pid: int) -> dict[str, Any]:
        key = self._queue.popleft()
        self._ledger.hand_out(pid, key)
        return Architecture.from_key(key).to_sample()

    def _finish(self, key: str, objectives: dict[str, float] | None, provenance: dict[str, Any] | None = None
                ) -> None:
        if objectives is None and not self.search.is_pending(key):
            _logger.warning("NSGA2Tuner: %s is not a pending proposal (already evaluated?); ignored", key)
            return
        if key in self._queue:  # replayed on resume before being handed out again
            self._queue.remove(key)
        if objectives is None:
            advanced = self.search.tell_failure(key)
        else:
            advanced = self.search.tell(key, objectives, provenance)
        self.save_checkpoint()
        if advanced:
            self._write_outputs()
            self._queue = deque(self.search.pending())
            self._ledger.next_generation()
        self._dispatch()

    def _write_outputs(self) -> None:
        if self.output_dir is None:
            return
        meta = {"experiment_id": self.experiment_id} if self.experiment_id else {}
        try:
            write_outputs(self.search, self.output_dir, self.space, **meta)
        except OSError as e:  # the search goes on (its state is saved); the front is rewritten next generation
            _logger.error("NSGA2Tuner: cannot write front.json/history.csv to classArgs.output_dir %s: %s",
                          self.output_dir, e)

    def _dispatch(self) -> None:
        """Use waiting credits for proposals of the current generation."""
        while self._credits and self._send is not None and self._may_hand_out():
            pid = self._credits.popleft()
            self._send(pid, self._assign(pid))

    def _after_event(self, records: TrialRecords | None = None, force: bool = False) -> None:
        """After a result or a trial end: stop if the first trials all failed, else count failed the
        hand-outs of a generation whose trials have all ended without reporting them."""
        n = self.search.config.fail_fast(self._first_request)
        fail_fast = bool(n) and not self.search.results and not self._ledger.valid and len(self._ledger.ended) >= n
        ended = bool(self._ledger.current) and all(p in self._ledger.ended for p in self._ledger.current)
        if self.stopped or not (fail_fast or ended and not self._queue):
            return  # nothing to decide yet (NNI's database is read only when something is)
        records = records if records is not None else self._records()
        if fail_fast:
            self._check_fail_fast(records, force)
        if self.stopped or self._queue:
            return  # the generation still has proposals to hand out
        settled = self._ledger.settled(records, force)
        if not settled:
            self._arm_grace(records)
        gen = self.search.generation
        for pid in settled:
            key = self._ledger.handed[pid]
            if self.search.generation == gen and self.search.is_pending(key):
                _logger.warning("NSGA2Tuner: every trial handed out in generation %d has ended and none reported "
                                "%s (handed out under parameter id %d); counted as failed", gen, key, pid)
                self._finish(key, None)

    def _arm_grace(self, records: TrialRecords | None) -> None:
        """Without NNI's database a successful end is taken to owe a result: wait for it, but not forever."""
        if records is None and (self._timer is None or not self._timer.is_alive()):
            self._timer = threading.Timer(RESULT_GRACE_S, self._grace_over)
            self._timer.daemon = True
            self._timer.start()

    def _grace_over(self) -> None:
        with self._lock:
            self._after_event(None, force=True)

    def _check_fail_fast(self, records: TrialRecords | None, force: bool) -> None:
        n = self.search.config.fail_fast(self._first_request)
        if not force and self._ledger.in_flight(list(self._ledger.ended), records):
            self._arm_grace(records)
            return
        self._stop(f"the first {len(self._ledger.ended)} trials all ended without a valid result "
                   f"(fail_fast_trials {n}); first failure: "
                   f"{first_failure(records, self._ledger.first_failure, self.experiment_dir)}")

    def _stop(self, reason: str) -> None:
        """Fail fast: hand out nothing more, record why, and have NNI end the experiment."""
        self.stopped = reason
        _logger.error("NSGA2Tuner: search stopped: %s", reason)
        self.save_checkpoint()
        if self.output_dir is not None:
            try:
                atomic_write_text(self.output_dir / FAILURE_FILE, reason + "\n")
            except OSError as e:
                _logger.error("NSGA2Tuner: cannot write %s: %s", self.output_dir / FAILURE_FILE, e)
        records = self._records()
        end_experiment(len(records.status) if records is not None else len(self._ledger.handed))


def _metric_dict(value: Any) -> Any:
    """The metric dict; NNI sometimes hands it over still JSON-encoded."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value
