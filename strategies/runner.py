"""In-process NSGA-II search with an evaluation callback (notebooks, CI, benchmarks).

It drives the same :class:`~strategies.nsga2.NSGA2Search` as the NNI tuner and writes the
same ``front.json`` / ``history.csv``, so for the same seed and a deterministic evaluator
both give the same front.
"""

from __future__ import annotations

import importlib
import inspect
import io
import json
import logging
import os
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from search_space.architecture import Architecture
from search_space.files import atomic_write_text, save_front
from search_space.space import SpaceConfig

from .config import NSGA2Config
from .nsga2 import NSGA2Search
from .objectives import extract_objectives

_logger = logging.getLogger(__name__)

HISTORY_FIELDS = ("generation", "evaluations", "failures", "front_size", "hypervolume")
STATE_FILE = "nsga2_state.json"  # the search state, as strategies.tuner saves it
METRICS_LOG = "evaluations.jsonl"  # every evaluation's metric dict (in-process pool searches)


class TrialFailed(Exception):
    """Raised by an evaluation callback to mark an architecture as failed (like a failed trial)."""


class SearchFailed(ValueError):
    """The first ``fail_fast_trials`` evaluations all failed (a ValueError: CLIs print it as one line)."""


def write_outputs(search: NSGA2Search, out_dir: str | os.PathLike, space: SpaceConfig | None = None,
                  **meta: Any) -> None:
    """Write ``front.json`` (:func:`search_space.files.save_front`) and ``history.csv``."""
    out = Path(out_dir)
    last = search.history[-1] if search.history else {}
    save_front(out / "front.json", search.front(), search.config.objectives, space,
               generation=last.get("generation"), evaluations=search.evaluations,
               hypervolume=last.get("hypervolume"), seed=search.seed, **meta)
    buf = io.StringIO()
    buf.write(",".join(HISTORY_FIELDS) + "\n")
    for h in search.history:
        buf.write(",".join(repr(h[f]) if isinstance(h[f], float) else str(h[f]) for f in HISTORY_FIELDS) + "\n")
    atomic_write_text(out / "history.csv", buf.getvalue())


Outcome = tuple[str, "Mapping[str, Any] | TrialFailed", Mapping[str, Any]]
"""One evaluation's end: the architecture key, its metric dict (or the failure), its provenance."""


def run_search(config: NSGA2Config, evaluate: Callable[[Architecture], Mapping[str, Any]], *,
               params_fn: Callable[[Architecture], float] | None = None,
               flops_fn: Callable[[Architecture], float] | None = None,
               output_dir: str | os.PathLike | None = None,
               space: SpaceConfig | None = None) -> NSGA2Search:
    """Run NSGA-II to the end, evaluating each proposal with ``evaluate``.

    Parameters
    ----------
    config : NSGA2Config
        Search settings (paper: population 50, offspring 50, 20 generations);
        ``config.blocks`` / ``config.ratios`` restrict the proposals to a subset of the space.
    evaluate : callable
        Architecture -> metric dict holding every configured objective; raise
        :class:`TrialFailed` to count the architecture as failed. When the first
        ``config.fail_fast_trials`` evaluations all fail, :class:`SearchFailed` is raised.
    params_fn : callable, optional
        Parameter counter for the ``param_range`` repair (``flops_fn``: FLOPs, ``flops_range``).
    output_dir : path, optional
        If given, ``front.json`` and ``history.csv`` are rewritten after every generation, and the
        search state (``nsga2_state.json``, as the tuner saves it) after every result.
    space : SpaceConfig, optional
        Recorded in ``front.json``.

    Returns
    -------
    NSGA2Search
        The finished search: ``.front()``, ``.history``, ``.results``.
    """
    def serial(keys: list[str]) -> Iterator[Outcome]:
        for key in keys:
            try:
                yield key, evaluate(Architecture.from_key(key)), {}
            except TrialFailed as e:
                yield key, e, {}

    return run_search_many(config, serial, params_fn=params_fn, flops_fn=flops_fn, output_dir=output_dir,
                           space=space)


def run_search_many(config: NSGA2Config, evaluate_many: Callable[[list[str]], Iterable[Outcome]], *,
                    params_fn: Callable[[Architecture], float] | None = None,
                    flops_fn: Callable[[Architecture], float] | None = None,
                    output_dir: str | os.PathLike | None = None, space: SpaceConfig | None = None,
                    metrics_log: bool = False, concurrency: int = 1, **meta: Any) -> NSGA2Search:
    """:func:`run_search` over an evaluator of whole generations (e.g. :class:`strategies.pool.EvaluatorPool`).

    ``evaluate_many(keys)`` evaluates a generation's proposals in any order and yields one
    :data:`Outcome` per key as each ends. A generation's proposals are drawn when it starts, so
    the order in which results arrive does not change the search: for a deterministic evaluator
    the front is the serial one's (and the NNI tuner's). ``metrics_log``: also append every
    evaluation's whole metric dict to ``evaluations.jsonl`` in ``output_dir``. ``concurrency``:
    evaluations run at once (sets the default ``fail_fast_trials`` as the tuner's trialConcurrency
    does). ``meta`` goes into ``front.json``.
    """
    search = NSGA2Search(config, params_fn, flops_fn=flops_fn)
    out = Path(output_dir) if output_dir is not None else None
    log = None
    if out is not None and metrics_log:
        out.mkdir(parents=True, exist_ok=True)
        log = open(out / METRICS_LOG, "w")  # noqa: SIM115 -- kept open for the whole search
    first_failure = None
    try:
        while not search.finished:
            generation = search.generation
            for key, outcome, prov in evaluate_many(search.pending()):
                provenance = {"trial_id": f"eval-{search.evaluations}", **prov}
                if isinstance(outcome, TrialFailed):
                    _logger.info("evaluation of %s failed: %s", key, outcome)
                    first_failure = first_failure or f"{key}: {outcome}"
                    advanced = search.tell_failure(key)
                    if not search.results and 0 < config.fail_fast(concurrency) <= len(search.failed):
                        raise SearchFailed(f"the first {len(search.failed)} evaluations all failed (fail_fast_trials "
                                           f"{config.fail_fast(concurrency)}); the first: {first_failure}") from None
                else:
                    advanced = search.tell(key, extract_objectives(outcome, config.objectives), provenance)
                if log is not None:
                    record = {"key": key, "generation": generation, **provenance}
                    record.update({"failed": str(outcome)} if isinstance(outcome, TrialFailed)
                                  else {"metrics": dict(outcome)})
                    log.write(json.dumps(record) + "\n")
                    log.flush()
                if out is not None:
                    atomic_write_text(out / STATE_FILE, json.dumps(search.to_state()) + "\n")
                    if advanced:
                        write_outputs(search, out, space, **meta)
    finally:
        if log is not None:
            log.close()
    return search


def load_callable(path: str) -> Callable[..., Any]:
    """``"package.module:function"`` -> the function (for the CLI's ``--evaluator``); one
    ``ValueError`` line for a bad spelling, a module that does not import, a missing name or a
    function that cannot be called with one architecture."""
    module, sep, name = path.partition(":")
    if not sep or not module or not name:
        raise ValueError(f"evaluator {path!r}: expected 'module:function'")
    try:
        mod = importlib.import_module(module)
    except ImportError as e:
        raise ValueError(f"evaluator {path!r}: cannot import {module!r} ({type(e).__name__}: {e})") from None
    fn = getattr(mod, name, None)
    if not callable(fn):
        raise ValueError(f"evaluator {path!r}: {name!r} is not a callable in {module!r}")
    try:
        inspect.signature(fn).bind(None)
    except TypeError:
        raise ValueError(f"evaluator {path!r}: {name}{inspect.signature(fn)} cannot be called with one "
                         "argument (an Architecture -> metric dict)") from None
    except ValueError:  # no signature (some builtins): let the call tell
        pass
    return fn
