"""A pool of long-lived evaluation workers: the in-process search on a GPU pool, without NNI.

``python -m strategies search --supernet DIR --workers N --devices cuda:0,cuda:1`` runs the same
:class:`~strategies.nsga2.NSGA2Search` as the NNI tuner, but instead of one NNI trial process per
architecture (interpreter start, imports and a checkpoint load every time) it starts ``N`` worker
processes once. Each builds one evaluator from the supernet, ``factory(supernet, device=...,
data_root=..., **evaluation)``, and then scores architecture after architecture with
``evaluator.evaluate(arch) -> metric dict``. The factory is named by a dotted path
(``module:attribute``) and imported only inside the workers: this package never imports torch
or ``trainers`` (docs/architecture.md §2); the default is the search trial's evaluator.

Workers get devices round-robin from ``devices``. A CUDA worker sees only its GPU
(``CUDA_VISIBLE_DEVICES``) and evaluates on ``cuda``; CPU workers share the machine's cores,
``cores // workers`` threads each (``OMP_NUM_THREADS``/``MKL_NUM_THREADS`` set before torch loads),
unless ``threads`` says otherwise. Workers start with the ``spawn`` method (CUDA cannot be used
in a forked child).

An evaluation that raises is a failed evaluation (like a failed trial); a worker that dies
(killed, out of memory) fails the architecture it held and is started again. A worker whose
evaluator cannot be built stops the pool with that reason (:class:`PoolError`, one line).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import os
import queue
import time
import traceback
from collections import deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from search_space.architecture import Architecture

from .runner import TrialFailed, load_callable

_logger = logging.getLogger(__name__)

# The search trial's own evaluator: the numbers of an NNI search trial with the same flags.
DEFAULT_FACTORY = "trainers.search_trial:SubnetEvaluator"
START_TIMEOUT_S = 600.0  # a worker that has not built its evaluator by then is taken as hung
_POLL_S = 0.5


class PoolError(ValueError):
    """The pool cannot evaluate: a worker could not build its evaluator (a ValueError: one CLI line)."""


def parse_devices(spec: str | Sequence[str]) -> list[str]:
    """``"cuda:0,cuda:1"`` / ``"cpu"`` / ``["cuda:0"]`` -> device names; ``ValueError`` naming a bad one."""
    names = [d.strip() for d in (spec.split(",") if isinstance(spec, str) else spec)]
    if not names or any(not d for d in names):
        raise ValueError(f"--devices: expected a comma-separated list such as cuda:0,cuda:1 or cpu, got {spec!r}")
    for d in names:
        kind, _, index = d.partition(":")
        if kind not in ("cpu", "cuda") or (index and not index.isdigit()) or (kind == "cpu" and index):
            raise ValueError(f"--devices: {d!r} is not a device; expected cpu, cuda or cuda:K")
    return names


def cpu_cores() -> int:
    """Cores this process may run on (the affinity mask, as taskset and cgroups set it)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


@dataclass(frozen=True)
class WorkerSpec:
    """What worker ``index`` runs on: the device its evaluator gets and its process environment."""

    index: int
    device: str  # as the user named it (cuda:1)
    evaluator_device: str  # as the evaluator gets it (cuda: the only GPU the worker sees)
    threads: int
    env: Mapping[str, str] = field(default_factory=dict)

    @property
    def name(self) -> str:
        return f"worker {self.index} ({self.device})"


def worker_specs(workers: int, devices: Sequence[str], threads: int | None = None) -> list[WorkerSpec]:
    """Devices round-robin; threads ``cores // workers`` (at least 1) unless given."""
    if workers < 1:
        raise ValueError(f"--workers: expected an integer >= 1, got {workers}")
    threads = threads if threads is not None else max(1, cpu_cores() // workers)
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    visible_ids = [v.strip() for v in visible.split(",")] if visible else None
    specs = []
    for i in range(workers):
        device = devices[i % len(devices)]
        env = {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
        evaluator_device = device
        if device.startswith("cuda"):
            k = int(device.partition(":")[2] or 0)
            if visible_ids is not None and k >= len(visible_ids):
                raise ValueError(f"--devices: {device} is not visible (CUDA_VISIBLE_DEVICES={visible})")
            # Only its own GPU: nothing in the evaluator can touch (or allocate on) another one.
            env["CUDA_VISIBLE_DEVICES"] = visible_ids[k] if visible_ids is not None else str(k)
            evaluator_device = "cuda"
        specs.append(WorkerSpec(i, device, evaluator_device, threads, env))
    return specs


def _one_line(e: BaseException) -> str:
    text = " ".join(str(e).split())
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def _worker_main(spec: WorkerSpec, factory: str, supernet: str, kwargs: Mapping[str, Any],
                 tasks: Any, results: Any, log_level: int) -> None:
    """One worker process: build the evaluator once, then evaluate keys from ``tasks`` until ``None``."""
    os.environ.update(spec.env)  # before the factory's module imports torch
    logging.basicConfig(level=log_level, format=f"{spec.name}: %(levelname)s %(name)s: %(message)s")
    t = time.perf_counter()
    try:
        evaluator = load_callable(factory)(supernet, device=spec.evaluator_device, **kwargs)
    except BaseException as e:  # noqa: BLE001 -- any reason goes back as one line
        results.put(("init-failed", spec.index, None, _one_line(e), traceback.format_exc()))
        return
    results.put(("ready", spec.index, None, time.perf_counter() - t, None))
    while True:
        key = tasks.get()
        if key is None:
            return
        t = time.perf_counter()
        try:
            metrics = dict(evaluator.evaluate(Architecture.from_key(key)))
        except Exception as e:  # noqa: BLE001 -- a failed evaluation, like a failed trial
            results.put(("failed", spec.index, key, _one_line(e), traceback.format_exc()))
        else:
            results.put(("done", spec.index, key, metrics, time.perf_counter() - t))


class _Worker:
    def __init__(self, spec: WorkerSpec, process: Any, tasks: Any) -> None:
        self.spec, self.process, self.tasks = spec, process, tasks
        self.ready = False
        self.key: str | None = None  # the architecture it is evaluating
        self.started = time.monotonic()


class EvaluatorPool:
    """``workers`` long-lived evaluator processes; use as a context manager.

    Parameters
    ----------
    supernet : str
        Passed to the factory as its first argument (a supernet run directory, export or checkpoint).
    workers : int
        Number of worker processes.
    devices : sequence of str
        ``cpu``, ``cuda`` or ``cuda:K``, handed out round-robin.
    factory : str
        ``module:attribute`` of ``factory(supernet, *, device, **evaluator_kwargs)`` returning an
        object with ``evaluate(Architecture) -> metric dict``.
    evaluator_kwargs : mapping
        Evaluation settings for the factory (data_root, eval_examples, steps, seed, ...).
    threads : int, optional
        CPU threads per worker (default: the cores divided among the workers).
    """

    def __init__(self, supernet: str, *, workers: int = 1, devices: Sequence[str] = ("cpu",),
                 factory: str = DEFAULT_FACTORY, evaluator_kwargs: Mapping[str, Any] | None = None,
                 threads: int | None = None, start_timeout: float = START_TIMEOUT_S) -> None:
        self.supernet = str(supernet)
        self.factory = factory
        self.kwargs = dict(evaluator_kwargs or {})
        self.specs = worker_specs(workers, list(devices), threads)
        self.start_timeout = start_timeout
        self._ctx = mp.get_context("spawn")
        self._results: Any = None
        self._workers: list[_Worker] = []
        self.load_seconds: list[float] = []  # per worker start: time to build the evaluator
        self.restarts = 0

    # ---- life cycle
    def __enter__(self) -> EvaluatorPool:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close(cancel=exc[0] is not None)

    def start(self) -> None:
        self._results = self._ctx.Queue()
        self._workers = [self._spawn(spec) for spec in self.specs]
        _logger.info("evaluator pool: %s; factory %s", ", ".join(
            f"{s.name} {s.threads} thread(s)" for s in self.specs), self.factory)

    def _spawn(self, spec: WorkerSpec) -> _Worker:
        tasks = self._ctx.Queue()
        process = self._ctx.Process(
            target=_worker_main, name=f"tamnas-eval-{spec.index}", daemon=True,
            args=(spec, self.factory, self.supernet, self.kwargs, tasks, self._results,
                  logging.getLogger().getEffectiveLevel()))
        process.start()
        return _Worker(spec, process, tasks)

    def close(self, cancel: bool = False) -> None:
        """Stop the workers: idle ones finish, busy ones are terminated when ``cancel`` (or after a wait)."""
        for w in self._workers:
            if w.process.is_alive():
                if cancel and w.key is not None:
                    w.process.terminate()
                else:
                    w.tasks.put(None)
        for w in self._workers:
            w.process.join(timeout=30)
            if w.process.is_alive():
                w.process.terminate()
                w.process.join(timeout=10)
        self._workers = []

    # ---- evaluation
    def evaluate_many(self, keys: Iterable[str]) -> Iterator[tuple[str, Mapping[str, Any] | TrialFailed,
                                                                   dict[str, Any]]]:
        """Evaluate ``keys`` on the workers; yields ``(key, metrics or TrialFailed, provenance)`` as they end.

        ``provenance`` names the worker and device and the evaluation's seconds.
        """
        todo = deque(keys)
        in_flight = 0
        while todo or in_flight:
            for w in self._workers:
                if todo and w.ready and w.key is None:
                    w.key = todo.popleft()
                    w.started = time.monotonic()
                    w.tasks.put(w.key)
                    in_flight += 1
            try:
                kind, index, key, payload, extra = self._results.get(timeout=_POLL_S)
            except queue.Empty:
                for key, reason in self._check_alive():
                    in_flight -= 1
                    yield key, TrialFailed(reason), {}
                continue
            w = self._workers[index]
            if kind == "ready":
                w.ready = True
                self.load_seconds.append(float(payload))
                _logger.info("%s ready after %.1f s", w.spec.name, payload)
            elif kind == "init-failed":
                _logger.debug("%s", extra)
                raise PoolError(f"{w.spec.name}: could not build the evaluator {self.factory}"
                                f"({self.supernet!r}, ...): {payload}")
            elif key != w.key:  # a result of a worker that was restarted meanwhile: already failed
                _logger.warning("%s: a stray result for %s ignored", w.spec.name, key)
            else:
                w.key = None
                in_flight -= 1
                prov = {"worker": index, "device": w.spec.device, "seconds": round(float(
                    extra if kind == "done" else time.monotonic() - w.started), 3)}
                if kind == "done":
                    yield key, payload, prov
                else:
                    _logger.info("%s: evaluation of %s failed:\n%s", w.spec.name, key, extra)
                    yield key, TrialFailed(payload), prov

    def _check_alive(self) -> list[tuple[str, str]]:
        """Workers that died: the architecture each held fails; each is started again."""
        lost = []
        for i, w in enumerate(self._workers):
            if w.process.is_alive():
                if not w.ready and time.monotonic() - w.started > self.start_timeout:
                    w.process.terminate()
                    raise PoolError(f"{w.spec.name}: evaluator not built after {self.start_timeout:.0f} s")
                continue
            code = w.process.exitcode
            if not w.ready:
                raise PoolError(f"{w.spec.name}: exited with code {code} while building the evaluator")
            reason = f"{w.spec.name} exited with code {code} during the evaluation"
            _logger.warning("%s; starting it again", reason)
            if w.key is not None:
                lost.append((w.key, reason))
            self.restarts += 1
            self._workers[i] = self._spawn(w.spec)
        return lost
