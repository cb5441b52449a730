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
- Results are keyed by architecture (the ``parameters`` sample), never by parameter id:
  after ``nnictl resume`` ids restart and can collide.
- When fewer proposals than requested ids are left, NNI's dispatcher answers with
  ``NoMoreTrialJobs`` packed for the *first* id and so overwrites that id's parameters with
  ``''``: the trial runs the right architecture but its final result arrives with
  ``parameters == ''``. The tuner therefore maps a result to the architecture it handed out
  under that parameter id (ids are unique within one tuner process).
- The dispatcher calls ``receive_trial_result`` and ``trial_end`` from two threads: every
  entry point takes one lock, and a successful ``trial_end`` that overtakes its final result
  waits for it (up to ``RESULT_GRACE_S``).
- State is saved atomically after every result under ``get_checkpoint_path()`` and restored
  by :meth:`load_checkpoint`; finished trials replayed by ``import_data`` on resume are
  matched by architecture, so nothing is counted twice. NNI runs the trials that were WAITING
  or RUNNING at the stop again, under their old ids: their results reach ``import_data`` as a
  bare ``{parameter, value}`` and their ``trial_end`` is dropped. The tuner reads these trials
  from NNI's database (``<experiment dir>/db/nni.sqlite``), counts their results under the
  interrupted trial's id, reads a failure of one from the database when NNI next asks for a
  trial, and hands out again only the pending proposals no trial is running: a resumed search
  needs no trial beyond ``maxTrialNumber``.
- A failed trial (``trial_end(success=False)``, or success without a final result) is
  counted, never proposed again, and not replaced: the generation completes with the
  survivors.
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
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import nni
from nni.tuner import Tuner
from nni.utils import ClassArgsValidator

from search_space.architecture import Architecture
from search_space.files import atomic_write_text
from search_space.space import ArchitectureError, SpaceConfig, check_search_space

from .config import CONFIG_KEYS, NSGA2Config
from .export import trial_jobs
from .nsga2 import NSGA2Search, state_config
from .objectives import extract_objectives
from .record import apply_supernet_record
from .runner import write_outputs

_logger = logging.getLogger(__name__)

STATE_FILE = "nsga2_state.json"
RESULT_GRACE_S = 30.0  # how long a successful trial_end waits for its final result

SPACE_KEYS = ("dataset", "width_multiplier")  # required: the supernet's space, never a silent default
_TUNER_KEYS = (*SPACE_KEYS, "output_dir")


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
        space = SpaceConfig.for_dataset(kwargs["dataset"], kwargs["width_multiplier"])
        if check_reach:
            check_param_range(config, space)
    except (ValueError, TypeError) as e:  # ArchitectureError is a ValueError
        raise ValueError(f"NSGA2Tuner classArgs: {e}") from None
    output_dir = kwargs.get("output_dir")
    if output_dir is not None and not isinstance(output_dir, str):
        raise ValueError(f"NSGA2Tuner classArgs: output_dir: expected a path string, got {output_dir!r}")
    return config, space, output_dir


class NSGA2ClassArgsValidator(ClassArgsValidator):
    """Named in ``nsga2_meta.yml``. NNI 3.0 calls it only for legacy (v1) configs; for v2 configs
    ``python -m workflow check CONFIG`` runs the same checks before ``nnictl create``."""

    def validate_class_args(self, **kwargs: Any) -> None:
        parse_class_args(kwargs)


class NSGA2Tuner(Tuner):
    """Generational NSGA-II (paper Algorithm 2) as an NNI 3.0 tuner.

    Parameters
    ----------
    dataset, width_multiplier
        Required: the supernet's space (recorded in ``front.json``; used by the parameter counter).
    **config
        Every field of :class:`strategies.config.NSGA2Config` under its own name (population_size,
        objectives, param_range, blocks, ratios, ...; defaults are the paper's). ``objectives``
        may be ``[{"name": "adv_acc", "direction": "max"}, ...]`` or ``["adv_acc:max", ...]``;
        ``param_range`` (paper: 1.61M-2.37M for the 2S supernet) is counted with the parameter
        table of ``dataset``/``width_multiplier``. ``blocks`` and ``ratios`` are part of the
        saved state (a resume with other values is refused); a result for an architecture
        outside them is handled like any result that is not a pending proposal.
    output_dir : str, optional
        Where ``front.json``/``history.csv`` go; default the experiment directory.
    params_fn : callable, optional
        Python use only: Architecture -> parameter count, instead of the parameter table.
    """

    def __init__(self, params_fn: Callable[[Architecture], float] | None = None, **class_args: Any) -> None:
        super().__init__()
        config, self.space, output_dir = parse_class_args(class_args, check_reach=params_fn is None)
        if config.param_range is not None and params_fn is None:
            params_fn = table_params_fn(self.space)
        self._seed_given = config.seed is not None
        self.search = NSGA2Search(config, params_fn)
        self.params_fn = params_fn
        ckpt = self.get_checkpoint_path()
        self.state_path = Path(ckpt) / STATE_FILE if ckpt else None
        if output_dir is not None:
            self.output_dir: Path | None = Path(output_dir)
        elif ckpt:
            self.output_dir = Path(ckpt).parent  # NNI_CHECKPOINT_DIRECTORY is <experiment dir>/checkpoint
        else:
            self.output_dir = None
        if self.state_path is None:
            _logger.warning("NSGA2Tuner: no NNI checkpoint directory; state is not persisted")
        # The dispatcher gets no experiment id; the experiment directory is named after it.
        self.experiment_id = os.environ.get("NNI_EXP_ID") or (Path(ckpt).parent.name if ckpt else None)
        self._queue: deque[str] = deque(self.search.pending())  # proposals not yet handed out
        self._credits: deque[int] = deque()  # parameter ids waiting for the next generation
        self._running: dict[int, str] = {}  # parameter id -> architecture key (this process only)
        self._send: Callable[[int, dict[str, Any]], None] | None = None
        # Resumed experiments: pending architectures whose trial NNI runs again (key -> trial job id).
        self._recovered: dict[str, str] = {}
        self._db = Path(ckpt).parent / "db" / "nni.sqlite" if ckpt else None
        # NNI's dispatcher runs trial_end on another thread than results and requests.
        self._lock = threading.Condition(threading.RLock())
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
            out = []
            for pid in parameter_id_list:
                if self._queue and not self._credits:
                    out.append(self._assign(pid))
                else:
                    self._credits.append(pid)
            # A short list makes NNI blank parameter_id_list[0]'s parameters: see receive_trial_result.
            return out

    def generate_parameters(self, parameter_id: int, **kwargs: Any) -> dict[str, Any]:
        with self._lock:
            if kwargs.get("st_callback") is not None:
                self._send = kwargs["st_callback"]
            self._check_recovered()
            if self._queue and not self._credits:
                return self._assign(parameter_id)
            self._credits.append(parameter_id)
        raise nni.NoMoreTrialError("waiting for the current generation to finish")

    def receive_trial_result(self, parameter_id: int, parameters: dict[str, Any], value: Any, **kwargs: Any) -> None:
        if kwargs.get("customized"):
            _logger.info("NSGA2Tuner: ignoring customized trial %s", parameter_id)
            return
        with self._lock:
            try:
                self._receive(parameter_id, parameters, value, kwargs.get("trial_job_id"))
            finally:
                self._lock.notify_all()  # a trial_end may be waiting for this result

    def _receive(self, parameter_id: int, parameters: Any, value: Any, trial_job_id: str | None) -> None:
        assigned = self._running.pop(parameter_id, None)
        try:
            key = Architecture.from_sample(parameters).key
        except (ArchitectureError, TypeError) as e:
            if assigned is None:
                _logger.error("NSGA2Tuner: trial %s has parameters outside the encoding (%s) and was not "
                              "handed out by this process; ignored", parameter_id, e)
                return
            # NNI's NoMoreTrialJobs reply overwrote this id's parameters (with ''): use what was handed out.
            _logger.info("NSGA2Tuner: trial %s reported parameters %.40r; using the architecture handed out "
                         "under that id", parameter_id, parameters)
            key = assigned
        else:
            if assigned is not None and assigned != key:
                _logger.warning("NSGA2Tuner: trial %s reported %s but was handed out %s; counting the reported "
                                "architecture", parameter_id, key, assigned)
        try:
            objectives = extract_objectives(_metric_dict(value), self.search.config.objectives)
        except ValueError as e:
            _logger.error("NSGA2Tuner: trial %s reported an unusable result (%s); counted as failed",
                          parameter_id, e)
            self._finish(key, None)
            return
        prov = {"trial_id": trial_job_id, "parameter_id": parameter_id}
        if self.experiment_id:
            prov["experiment_id"] = self.experiment_id
        self._finish(key, objectives, {k: v for k, v in prov.items() if v is not None})

    def trial_end(self, parameter_id: int, success: bool, **kwargs: Any) -> None:
        with self._lock:
            if success and parameter_id in self._running:
                # The final result travels on the dispatcher's other thread and may not have landed yet.
                self._lock.wait_for(lambda: parameter_id not in self._running, timeout=RESULT_GRACE_S)
            key = self._running.pop(parameter_id, None)
            if key is None:
                return  # its result already arrived, or it was handed out before a resume
            if success:
                _logger.warning("NSGA2Tuner: trial %s (%s) succeeded without a final result; counted as failed",
                                parameter_id, key)
            self._finish(key, None)

    def import_data(self, data: list[dict[str, Any]]) -> None:
        """Finished trials replayed on ``nnictl resume`` (or imported): matched by architecture.

        Shapes seen from NNI 3.0: the replay of finished trials at resume is
        ``{"parameter": sample, "value": metrics, "trialJobId": id}``; the result of a trial that
        was running at stop time and that NNI re-ran is ``{"parameter": sample, "value": metrics}``.
        """
        with self._lock:
            for entry in data:
                try:
                    key = Architecture.from_sample(entry["parameter"]).key
                    objectives = extract_objectives(_metric_dict(entry["value"]), self.search.config.objectives)
                except (ArchitectureError, ValueError, KeyError, TypeError) as e:
                    _logger.warning("NSGA2Tuner: skipping imported entry (%s)", e)
                    continue
                if key in self.search.results or not self.search.is_pending(key):
                    _logger.debug("NSGA2Tuner: imported %s already known or not pending; skipped", key)
                    continue
                trial_id = entry.get("trial_job_id") or entry.get("trialJobId")
                if trial_id is None and key in self._recovered:
                    trial_id = self._recovered.pop(key)  # NNI's re-run of a trial the stop interrupted
                prov = {"trial_id": trial_id}
                self._finish(key, objectives, {k: v for k, v in prov.items() if v is not None})

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
        # A missing seed was drawn at start: the saved one wins; any other change is an error.
        if self._seed_given and now["seed"] != saved["seed"] or {**now, "seed": None} != {**saved, "seed": None}:
            raise ValueError(f"NSGA2Tuner: classArgs differ from the saved state {self.state_path}: "
                             f"saved {saved}, now {now}")
        self.search = NSGA2Search.from_state(state, self.params_fn)
        # NNI runs the trials that were WAITING or RUNNING at the stop again; their results come
        # through import_data, their ends never reach the tuner. Those proposals are not handed
        # out again (that would cost trials beyond maxTrialNumber); the other pending ones are.
        pending = self.search.pending()
        self._recovered = {k: t for k, t in self._interrupted_trials().items() if k in pending}
        self._queue = deque(k for k in pending if k not in self._recovered)
        self._running.clear()
        _logger.info("NSGA2Tuner: resumed at generation %d with %d evaluations; %d proposals to hand out, "
                     "%d run again by NNI", self.search.generation, self.search.evaluations, len(self._queue),
                     len(self._recovered))

    def _interrupted_trials(self) -> dict[str, str]:
        """Architecture key -> trial job id of the trials WAITING or RUNNING when the experiment stopped."""
        if self._db is None or not self._db.exists():
            return {}
        out = {}
        for trial_id, (status, params) in trial_jobs(self._db).items():
            if status in ("WAITING", "RUNNING") and params is not None:
                try:
                    out[Architecture.from_sample(params).key] = trial_id
                except ArchitectureError:
                    continue
        return out

    def _check_recovered(self) -> None:
        """A re-run trial that fails sends the tuner nothing: read its end from NNI's database."""
        if not self._recovered or self._db is None:
            return
        try:
            jobs = trial_jobs(self._db)
        except ValueError as e:
            _logger.warning("NSGA2Tuner: %s", e)
            return
        for key, trial_id in list(self._recovered.items()):
            status = jobs.get(trial_id, (None, None))[0]
            if status in ("FAILED", "SYS_CANCELED", "USER_CANCELED", "EARLY_STOPPED"):
                _logger.warning("NSGA2Tuner: resumed trial %s (%s) ended %s; counted as failed", trial_id, key, status)
                del self._recovered[key]
                self._finish(key, None)

    def save_checkpoint(self) -> None:
        if self.state_path is not None:
            atomic_write_text(self.state_path, json.dumps(self.search.to_state()) + "\n")

    # ---- internals
    def _assign(self, pid: int) -> dict[str, Any]:
        key = self._queue.popleft()
        self._running[pid] = key
        return Architecture.from_key(key).to_sample()

    def _finish(self, key: str, objectives: dict[str, float] | None, provenance: dict[str, Any] | None = None
                ) -> None:
        if not self.search.is_pending(key):
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
            if self.output_dir is not None:
                meta = {"experiment_id": self.experiment_id} if self.experiment_id else {}
                write_outputs(self.search, self.output_dir, self.space, **meta)
            self._queue = deque(self.search.pending())
        self._dispatch()

    def _dispatch(self) -> None:
        """Use waiting credits for proposals of the current generation."""
        while self._credits and self._queue and self._send is not None:
            pid = self._credits.popleft()
            self._send(pid, self._assign(pid))


def _metric_dict(value: Any) -> Any:
    """The metric dict; NNI sometimes hands it over still JSON-encoded."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def check_param_range(config: NSGA2Config, space: SpaceConfig) -> None:
    """``ValueError`` if ``config.param_range`` reaches no architecture of the searched space
    (exact bounds from the parameter table; the repair could never succeed)."""
    if config.param_range is None:
        return
    from search_space.params import param_table  # lazy: only a param_range needs the table

    lo, hi = param_table(space).interval(config.ratios, config.blocks)
    low, high = config.param_range
    if high < lo or low > hi:
        subset = "" if config.blocks is None and config.ratios is None else " (blocks/ratios subset)"
        raise ValueError(f"param_range: [{low:,.0f}, {high:,.0f}] reaches no architecture: the {space.dataset} "
                         f"space at width {space.width_multiplier}{subset} spans {lo:,}-{hi:,} parameters")


def table_params_fn(space: SpaceConfig) -> Callable[[Architecture], float]:
    """Architecture -> exact parameter count of ``space`` (the parameter table)."""
    from search_space.params import param_table

    table = param_table(space)

    def params_fn(arch: Architecture) -> float:
        return float(table.count(arch))

    return params_fn
