"""``python -m strategies``: run NSGA-II in-process, or recompute an nnictl experiment's front.

``search`` takes every :class:`~strategies.config.NSGA2Config` field as a flag; with ``--supernet DIR``
it scores architectures like the search trial on a pool of long-lived workers (``--workers``,
``--devices``; :mod:`strategies.pool`), its settings from the supernet's record as the tuner takes
them. ``front`` reads the space from the experiment (its tuner's classArgs) or needs ``--dataset``
and ``--width``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

from search_space.cli import Parser, UsageError, add_out, add_space, int_at_least, run, space_from_flags
from search_space.files import save_front
from search_space.rundir import RunDirectory, check_writable_dir

from .config import add_config_arguments, config_from_arguments
from .objectives import parse_objectives


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m strategies", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    s = sub.add_parser("search", help="in-process NSGA-II with an evaluation callback",
                       description="In-process NSGA-II; the flags are the fields of NSGA2Config (the tuner's "
                                   "classArgs).")
    s.add_argument("--evaluator", default=None,
                   help="'toy' (analytic problem, strategies.toy; the default without --supernet) or "
                        "'module:function' (Architecture -> metric dict)")
    _add_pool_arguments(s)
    add_config_arguments(s)
    add_space(s, "the supernet's data set: recorded in front.json, counts parameters for --param-range "
                 "(with --width; neither: front.json records no space)", "the supernet's width multiplier")
    add_out(s, "directory for front.json and history.csv (default: runs/search)", default="runs/search")
    s.add_argument("--overwrite", action="store_true",
                   help="replace the search in --out (refused without it when --out holds a front.json)")
    s.set_defaults(func=_search)

    f = sub.add_parser("front", help="recompute front.json from an nnictl experiment or its export file")
    f.add_argument("source", help="experiment id or directory (running or stopped; read from NNI's database), "
                                  "or a file from `nnictl experiment export ID --type json`")
    f.add_argument("--objectives", nargs="+", default=None, metavar="NAME:max|min")
    inferred = "default: the experiment's tuner classArgs; needed for an export file"
    add_space(f, f"the supernet's data set ({inferred})", f"the supernet's width multiplier ({inferred})")
    add_out(f, "the front file to write (default: front.json)", default="front.json")
    f.add_argument("--overwrite", action="store_true",
                   help="replace --out even with a front of fewer architectures (refused without it)")
    f.set_defaults(func=_front)
    return p


def _search(args: argparse.Namespace) -> None:
    from .runner import load_callable, run_search
    from .toy import toy_objectives

    if args.supernet is not None:
        return _pool_search(args)
    for flag, value in (("--workers", args.workers), ("--devices", args.devices), ("--threads", args.threads),
                        ("--evaluator-factory", args.evaluator_factory),
                        *((f, getattr(args, _eval_dest(d))) for f, d in _EVALUATION_FLAGS)):
        if value is not None:
            raise UsageError(f"{flag} evaluates on a supernet: give --supernet DIR")
    space = space_from_flags(args)
    config = config_from_arguments(args)
    evaluate = toy_objectives if args.evaluator in (None, "toy") else _checked(load_callable(args.evaluator), args.evaluator)
    run_dir = RunDirectory(args.out, finished=("front.json",), outputs=("front.json", "history.csv"))
    run_dir.check(overwrite=args.overwrite)
    params_fn = None
    if config.param_range is not None:
        if space is None:
            raise UsageError("--param-range counts parameters in a space: give --dataset and --width")
        from .class_args import check_param_range, table_params_fn

        check_param_range(config, space)
        params_fn = table_params_fn(space)
    flops_fn = None
    if config.flops_range is not None:
        if space is None:
            raise UsageError("--flops-range counts FLOPs in a space: give --dataset and --width")
        from .class_args import check_flops_range, table_flops_fn

        check_flops_range(config, space)
        flops_fn = table_flops_fn(space)
    with run_dir.lock():
        run_dir.check(overwrite=args.overwrite)  # again: another search may have finished meanwhile
        run_dir.clear()
        search = run_search(config, evaluate, params_fn=params_fn, flops_fn=flops_fn, output_dir=args.out,
                            space=space)
    last = search.history[-1]
    print(f"{search.evaluations} evaluations, front of {last['front_size']}, hypervolume "
          f"{last['hypervolume']:.6f}; wrote {Path(args.out) / 'front.json'}")


def _checked(fn, name: str):
    """``fn`` whose unexpected exceptions (a wrong signature or return) become one ``ValueError`` line."""
    from .runner import TrialFailed

    def evaluate(arch):
        try:
            metrics = fn(arch)
        except TrialFailed:
            raise
        except Exception as e:  # noqa: BLE001 - the user's code: report it in one line, not a traceback
            raise ValueError(f"evaluator {name!r} raised {type(e).__name__} on {arch.key}: {e}") from None
        if not isinstance(metrics, Mapping):
            raise ValueError(f"evaluator {name!r} returned {type(metrics).__name__} for {arch.key}; expected a "
                             "metric dict")
        return metrics

    return evaluate


# ---- the in-process search on a pool of evaluator workers (strategies.pool)
# Evaluation settings handed to the evaluator factory as keyword arguments (unset: its defaults,
# which depend on the device as the search trial's do).
_EVALUATION_FLAGS = (("--data-root", "data_root"), ("--eval-examples", "eval_examples"),
                     ("--bn-batches", "bn_batches"), ("--batch-size", "batch_size"), ("--steps", "steps"),
                     ("--epsilon", "epsilon"), ("--eval-seed", "seed"))


def _add_pool_arguments(s: argparse.ArgumentParser) -> None:
    from .pool import DEFAULT_FACTORY

    g = s.add_argument_group(
        "in-process search on a supernet (no NNI)",
        "--supernet scores each proposal like a search trial (inherited weights, BN recalibration, clean + PGD "
        "accuracy on the validation split) on long-lived worker processes, each holding the supernet once. The "
        "space, blocks, ratios, param_range and hv_bounds come from the supernet's record, as for the tuner's "
        "classArgs.supernet; writes front.json, history.csv, nsga2_state.json and evaluations.jsonl.")
    g.add_argument("--supernet", metavar="DIR", help="supernet run directory (its supernet.json beside "
                   "checkpoints/)")
    g.add_argument("--workers", type=int_at_least(1), metavar="N",
                   help="evaluator processes (default: one per device)")
    g.add_argument("--devices", metavar="LIST", help="cpu, or GPUs such as cuda:0,cuda:1, handed out to the "
                   "workers round-robin (default cpu)")
    g.add_argument("--threads", type=int_at_least(1), metavar="T",
                   help="CPU threads per worker (default: the cores divided among the workers)")
    g.add_argument("--evaluator-factory", metavar="MODULE:CLASS",
                   help=f"factory(supernet, *, device, **evaluation) with .evaluate(arch) -> metric dict "
                        f"(default {DEFAULT_FACTORY})")
    helps = {"data_root": "data directory (default: the supernet's)",
             "eval_examples": "first N validation images (default by device)",
             "bn_batches": "training batches for BN recalibration (default by device)",
             "batch_size": "batch size of BN recalibration and evaluation (default by device)",
             "steps": "PGD steps (default 10)", "epsilon": "PGD epsilon (default: the supernet's training epsilon)",
             "seed": "seed of each evaluation (default 0; the search's own is --seed)"}
    types = {"eval_examples": int_at_least(1), "bn_batches": int_at_least(0), "batch_size": int_at_least(1),
             "steps": int_at_least(1), "epsilon": float, "seed": int_at_least(0), "data_root": str}
    for flag, dest in _EVALUATION_FLAGS:
        g.add_argument(flag, dest=_eval_dest(dest), type=types[dest], help=helps[dest])


def _eval_dest(name: str) -> str:
    return "eval_seed" if name == "seed" else name  # --seed is the search's


def _pool_search(args: argparse.Namespace) -> None:
    import time
    from dataclasses import fields

    from .class_args import parse_class_args, table_flops_fn, table_params_fn
    from .config import NSGA2Config
    from .pool import DEFAULT_FACTORY, EvaluatorPool, parse_devices
    from .record import SUPERNET_KEY
    from .runner import run_search_many

    if args.evaluator is not None:
        raise UsageError("--evaluator and --supernet exclude each other: --supernet evaluates with "
                         "--evaluator-factory")
    # The given flags as classArgs: the tuner's classArgs.supernet rules apply (the record's space, blocks,
    # ratios, param_range and hv_bounds; a flag may narrow them, never contradict them).
    class_args: dict = {SUPERNET_KEY: args.supernet}
    for f in fields(NSGA2Config):
        value = getattr(args, f.name)
        if value is not None:
            parse = f.metadata["parse"]
            class_args[f.name] = parse(value, f.metadata["flag"]) if parse else value
    if args.dataset is not None:
        class_args["dataset"] = args.dataset
    if args.width is not None:
        class_args["width_multiplier"] = args.width
    config, space, _ = parse_class_args(class_args)
    params_fn = table_params_fn(space) if config.param_range is not None else None
    flops_fn = table_flops_fn(space) if config.flops_range is not None else None
    devices = parse_devices(args.devices or "cpu")
    workers = args.workers or len(devices)
    evaluation = {dest: getattr(args, _eval_dest(dest)) for _, dest in _EVALUATION_FLAGS}
    factory = args.evaluator_factory or DEFAULT_FACTORY
    run_dir = RunDirectory(args.out, finished=("front.json",), outputs=("front.json", "history.csv"))
    run_dir.check(overwrite=args.overwrite)
    t = time.monotonic()
    with run_dir.lock(), EvaluatorPool(args.supernet, workers=workers, devices=devices, factory=factory, threads=args.threads,
                       evaluator_kwargs={k: v for k, v in evaluation.items() if v is not None}) as pool:
        search = run_search_many(config, pool.evaluate_many, params_fn=params_fn, flops_fn=flops_fn, output_dir=args.out,
                                 space=space, metrics_log=True, concurrency=workers, supernet=str(args.supernet))
    minutes = (time.monotonic() - t) / 60
    last = search.history[-1]
    print(f"{search.evaluations} evaluations on {workers} worker(s) in {minutes:.1f} min "
          f"({search.evaluations / minutes:.1f} per minute), front of {last['front_size']}, hypervolume "
          f"{last['hypervolume']:.6f}; wrote {Path(args.out) / 'front.json'}")


def _front(args: argparse.Namespace) -> None:
    from .export import experiment_space, fetch_export, front_from_export, read_export_file

    objectives = parse_objectives(args.objectives)
    out = Path(args.out)
    if out.is_dir():
        raise UsageError(f"--out {out}: is a directory; name the front file to write (e.g. {out / 'front.json'})")
    check_writable_dir(out.parent)
    src = Path(args.source)
    if src.is_file():
        entries, recorded = read_export_file(src), None
    else:
        entries, recorded = fetch_export(args.source), experiment_space(args.source)
    space = space_from_flags(args, recorded, str(args.source))
    front = front_from_export(entries, objectives)
    with RunDirectory(out.parent, finished=(), lock_name=f".{out.name}.lock").lock():
        if out.exists() and not args.overwrite:
            _refuse_emptier(out, len(front), len(entries))
        save_front(out, front, objectives, space, source=str(args.source), evaluations=len(entries))
    print(f"{len(entries)} trials, front of {len(front)}; wrote {args.out}")


def _refuse_emptier(out: Path, size: int, trials: int) -> None:
    """A front file is never replaced by one of fewer architectures (or an unreadable one) without --overwrite."""
    from search_space.files import load_front

    try:
        old = len(load_front(out)[0])
    except ValueError as e:
        raise UsageError(f"--out {out}: exists and is not a front file ({e}); pass --overwrite to replace it") from None
    if size < old:
        raise UsageError(f"--out {out}: holds a front of {old} architecture(s), the recomputed one {size} (from "
                         f"{trials} trial(s) with a result); pass --overwrite to replace it")


def main(argv: list[str] | None = None) -> int:
    return run(_parser(), argv, level=logging.WARNING, log_format="%(levelname)s %(name)s: %(message)s")


if __name__ == "__main__":
    sys.exit(main())
