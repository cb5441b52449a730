"""In-process NSGA-II search with an evaluation callback (notebooks, CI, benchmarks).

It drives the same :class:`~strategies.nsga2.NSGA2Search` as the NNI tuner and writes the
same ``front.json`` / ``history.csv``, so for the same seed and a deterministic evaluator
both give the same front.
"""

from __future__ import annotations

import importlib
import inspect
import io
import logging
import os
from collections.abc import Callable, Mapping
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
        If given, ``front.json`` and ``history.csv`` are rewritten after every generation.
    space : SpaceConfig, optional
        Recorded in ``front.json``.

    Returns
    -------
    NSGA2Search
        The finished search: ``.front()``, ``.history``, ``.results``.
    """
    search = NSGA2Search(config, params_fn, flops_fn=flops_fn)
    first_failure = None
    while not search.finished:
        for key in search.pending():
            arch = Architecture.from_key(key)
            try:
                metrics = evaluate(arch)
            except TrialFailed as e:
                _logger.info("evaluation of %s failed: %s", key, e)
                first_failure = first_failure or f"{key}: {e}"
                advanced = search.tell_failure(key)
                if not search.results and 0 < config.fail_fast() <= len(search.failed):
                    raise SearchFailed(f"the first {len(search.failed)} evaluations all failed (fail_fast_trials "
                                       f"{config.fail_fast()}); the first: {first_failure}") from None
            else:
                advanced = search.tell(key, extract_objectives(metrics, config.objectives),
                                       {"trial_id": f"eval-{search.evaluations}"})
            if advanced and output_dir is not None:
                write_outputs(search, output_dir, space)
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
