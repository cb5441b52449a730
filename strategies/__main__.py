"""``python -m strategies``: run NSGA-II in-process, or recompute an nnictl experiment's front.

``search`` takes every :class:`~strategies.config.NSGA2Config` field as a flag; ``front`` reads the
space from the experiment (its tuner's classArgs) or needs ``--dataset`` and ``--width``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Mapping
from pathlib import Path

from search_space.cli import Parser, UsageError, add_out, add_space, run, space_from_flags
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
    s.add_argument("--evaluator", default="toy",
                   help="'toy' (analytic problem, strategies.toy) or 'module:function' (Architecture -> metric dict)")
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

    space = space_from_flags(args)
    config = config_from_arguments(args)
    evaluate = toy_objectives if args.evaluator == "toy" else _checked(load_callable(args.evaluator), args.evaluator)
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
