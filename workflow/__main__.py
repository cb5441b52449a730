"""``python -m workflow``: the end-to-end pipeline, the analysis report, LegoNet, results tables, config check.

    python -m workflow pipeline [--profile demo|tiny] [--out runs/demo] [--keep-ui] ...
    python -m workflow report --search ID_OR_DIR [--retrain [LABEL=]ID_OR_DIR ...] --out DIR
    python -m workflow lego --search ID_OR_DIR --out DIR          # from a search's top-k subnets
    python -m workflow lego --dataset cifar10 --width 2 [--out DIR] # from the paper's Tables XIV/XV
    python -m workflow gather RETRAIN_DIR ... [--front retrain_front.json] --out PREFIX
    python -m workflow check nni_configs/*.yml                    # every stage, every training service

A usage error is one line ``error: ...`` and exit code 2; bad input (a file, a field) one line and 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

from search_space.cli import Parser, UsageError, int_at_least
from search_space.datasets import DATASET_NAMES
from search_space.encoding import WIDTH_MULTIPLIERS, ArchitectureError, SpaceConfig, atomic_write_text


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid number of seconds: {text!r}") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} is not allowed; expected seconds > 0")
    return value


def _add_pipeline(sub: argparse._SubParsersAction) -> None:
    from .pipeline import PROFILES

    p = sub.add_parser("pipeline", help="supernet, nnictl search, picks + LegoNet, nnictl retrain, report")
    p.add_argument("--out", default="runs/demo", help="output folder (default runs/demo)")
    p.add_argument("--profile", choices=sorted(PROFILES), default="demo")
    p.add_argument("--port", type=int, help="web UI port of the search experiment (default: a free one)")
    p.add_argument("--keep-ui", action="store_true", help="leave the search experiment's web UI running at the end")
    p.add_argument("--with-legonet", action="store_true",
                   help="retrain the LegoNet too, beside the front's pick (one core each: about twice the retrain "
                        "stage's time for the same accuracy; the demo profile retrains the pick alone on both cores)")
    for stage in ("search", "retrain"):
        p.add_argument(f"--{stage}-timeout", type=_seconds, metavar="SECONDS",
                       help=f"time limit of the {stage} stage (default: the profile's, scaled by the machine's pace)")


def _add_report(sub: argparse._SubParsersAction) -> None:
    r = sub.add_parser("report", help="analysis report of a search and its retrains (Markdown + PNG + CSV)")
    r.add_argument("--search", required=True, metavar="ID_OR_DIR",
                   help="search experiment id (nnictl registry) or directory holding front.json")
    r.add_argument("--retrain", action="append", default=[], metavar="[LABEL=]ID_OR_DIR",
                   help="retrain experiment id or directory of result.json files; repeat for scratch and "
                        "fine-tune or for several supernet regimes; LABEL names the set (default: the id)")
    r.add_argument("--top-k", type=int_at_least(1), default=10, help="subnets counted in the block/ratio statistics")
    r.add_argument("--legonet", metavar="JSON", help="the LegoNet to compare (default: built from this search's "
                                                     "statistics)")
    r.add_argument("--out", required=True, help="report directory (report.md, PNGs, CSV/JSON)")


def _add_lego(sub: argparse._SubParsersAction) -> None:
    lg = sub.add_parser("lego", help="LegoNet: from a search's top-k subnets (with the front architectures to "
                                     "retrain), or from block/ratio statistics tables (default: the paper's)")
    lg.add_argument("--search", metavar="ID_OR_DIR", help="the search whose top-k subnets are counted")
    lg.add_argument("--top-k", type=int_at_least(1), help="with --search: subnets counted (default 10)")
    lg.add_argument("--pick", metavar="ROLE,...",
                    help="with --search: front architectures written to retrain_front.json with the LegoNet, "
                         "one per role of best-adv, best-clean, smallest (default: all three)")
    lg.add_argument("--front-top", type=int_at_least(0), metavar="N",
                    help="with --search: the first N front architectures instead of --pick")
    lg.add_argument("--without-legonet", action="store_true",
                    help="with --search: retrain_front.json holds the front's picks only (legonet.json is still "
                         "written)")
    lg.add_argument("--block-stats", type=Path, help="without --search: Table XIV-style CSV (layer, 0..21); "
                                                     "default the paper's")
    lg.add_argument("--ratio-stats", type=Path, help="without --search: Table XV-style CSV (layer, 0..9); "
                                                     "default the paper's")
    lg.add_argument("--dataset", choices=DATASET_NAMES,
                    help="the space the LegoNet's parameters are counted in (required without --search)")
    lg.add_argument("--width", type=int, choices=WIDTH_MULTIPLIERS, help="width multiplier (required without "
                                                                         "--search)")
    lg.add_argument("--out", help="folder for legonet.json (with --search also the statistics and "
                                  "retrain_front.json; required there); without it the JSON goes to stdout")


def _parser() -> argparse.ArgumentParser:
    p = Parser(prog="python -m workflow", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="command", required=True)
    _add_pipeline(sub)
    _add_report(sub)
    _add_lego(sub)
    g = sub.add_parser("gather", help="result.json files of retrains into results.csv and results.md")
    g.add_argument("paths", nargs="+", help="retrain experiment ids or directories, or result.json files")
    g.add_argument("--front", help="front file whose provenance labels the rows (the pipeline's "
                                   "legonet/retrain_front.json); default R1, R2, ...")
    g.add_argument("--out", required=True, help="output prefix: writes PREFIX.csv and PREFIX.md")
    c = sub.add_parser("check", help="check nnictl configs before `nnictl create` (NNI's schema, the trial's files "
                                     "and supernet record, classArgs, the code directory's packing); starts nothing")
    c.add_argument("configs", nargs="+", metavar="CONFIG", help="e.g. nni_configs/*.yml")
    c.add_argument("--out", help="also write the lines (problems, notes, summaries) to this file")
    return p


def _pipeline(args: argparse.Namespace) -> None:
    from .pipeline import PROFILES, TimeLimits, closing_lines, run_pipeline

    profile = PROFILES[args.profile]
    if args.with_legonet:
        profile = replace(profile, retrain_legonet=True)
    s = run_pipeline(args.out, profile, port=args.port, keep_search_ui=args.keep_ui,
                     limits=TimeLimits(args.search_timeout, args.retrain_timeout))
    sys.stdout.write("\n" + (Path(s["out"]) / "results.md").read_text())
    sys.stdout.write("\n".join(closing_lines(s, args.keep_ui)) + "\n")


def _report(args: argparse.Namespace) -> None:
    from search_space.encoding import load_architecture

    from .report import write_report
    from .results import load_retrain
    from .search import load_search

    search = load_search(args.search)
    retrains = [r for source in args.retrain for r in load_retrain(source)]
    lego = load_architecture(args.legonet, search.space) if args.legonet else None
    rep = write_report(search, retrains, args.out, top_k_count=args.top_k, lego=lego)
    print(f"wrote {rep.out / 'report.md'} ({len(rep.files)} files)")


def _lego_from_search(args: argparse.Namespace) -> None:
    from .choice import DEFAULT_ROLES, parse_roles
    from .search import load_search
    from .statistics import DEFAULT_TOP_K, search_statistics, write_retrain_front, write_statistics

    for flag, value in (("--block-stats", args.block_stats), ("--ratio-stats", args.ratio_stats),
                        ("--dataset", args.dataset), ("--width", args.width)):
        if value is not None:
            raise UsageError(f"{flag}: not with --search (the statistics and the space come from the search)")
    if args.out is None:
        raise UsageError("--out: required with --search")
    if args.pick is not None and args.front_top is not None:
        raise UsageError("--pick and --front-top: give one of them")
    try:
        roles = None if args.front_top is not None else (parse_roles(args.pick) if args.pick else DEFAULT_ROLES)
    except ValueError as e:
        raise UsageError(str(e)) from None
    search = load_search(args.search)
    stats = search_statistics(search, args.top_k or DEFAULT_TOP_K)
    out = Path(args.out)
    write_statistics(stats, search, out)
    archs = write_retrain_front(search, stats.legonet, out / "retrain_front.json", roles=roles,
                                front_top=args.front_top, legonet=not args.without_legonet)
    print(f"top {stats.k} of {len(search.evaluated)}: LegoNet {stats.legonet.key}; wrote {out / 'legonet.json'} "
          f"and {out / 'retrain_front.json'} ({len(archs)} architectures: "
          + ", ".join(str(a.provenance.get("label")) for a in archs) + ")")


def _lego_from_tables(args: argparse.Namespace) -> None:
    from search_space.legonet import PAPER_BLOCK_STATS, PAPER_RATIO_STATS

    from .statistics import legonet_from_tables

    for flag, value in (("--top-k", args.top_k), ("--pick", args.pick), ("--front-top", args.front_top),
                        ("--without-legonet", args.without_legonet or None)):
        if value is not None:
            raise UsageError(f"{flag}: only with --search")
    if args.dataset is None or args.width is None:
        raise UsageError("--dataset and --width: required without --search (the space the LegoNet's "
                         "parameters are counted in)")
    space = SpaceConfig.for_dataset(args.dataset, args.width)
    arch = legonet_from_tables(args.block_stats or PAPER_BLOCK_STATS, args.ratio_stats or PAPER_RATIO_STATS, space,
                               block_source=str(args.block_stats or "paper Table XIV"),
                               ratio_source=str(args.ratio_stats or "paper Table XV"))
    text = json.dumps(arch.to_dict(space), indent=2) + "\n"
    if args.out is None:
        sys.stdout.write(text)
        return
    atomic_write_text(Path(args.out) / "legonet.json", text)
    print(f"LegoNet {arch.key}; wrote {Path(args.out) / 'legonet.json'}")


def _lego(args: argparse.Namespace) -> None:
    (_lego_from_search if args.search else _lego_from_tables)(args)


def _gather(args: argparse.Namespace) -> None:
    from .results import gather, labels_from_front

    csv_text, md, _ = gather(args.paths, labels_from_front(args.front))
    atomic_write_text(f"{args.out}.csv", csv_text)
    atomic_write_text(f"{args.out}.md", md)
    sys.stdout.write(md)


def _check(args: argparse.Namespace) -> int:
    """One line per problem (stderr, ``error: FILE: FIELD: ...``), notes and summaries (stdout); 1 on any problem."""
    from .check import check_config

    reports = [check_config(path) for path in args.configs]
    lines = [line for r in reports for line in r.lines()]
    if args.out:
        atomic_write_text(args.out, "\n".join(lines) + "\n")
    for line in lines:
        (sys.stderr if line.startswith("error: ") else sys.stdout).write(line + "\n")
    return 1 if any(r.problems for r in reports) else 0


COMMANDS = {"pipeline": _pipeline, "report": _report, "lego": _lego, "gather": _gather, "check": _check}


def _configure_logging(command: str) -> None:
    if command == "pipeline":  # the pipeline's stages and progress are its output
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    else:
        logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")


def main(argv: list[str] | None = None) -> int:
    from .nnictl import ExperimentError

    code, message = 0, None
    try:
        args = _parser().parse_args(argv)  # --help still prints and exits 0
        _configure_logging(args.command)
        code = COMMANDS[args.command](args) or 0  # check returns its exit code
    except UsageError as e:
        code, message = 2, str(e)
    except (ExperimentError, subprocess.CalledProcessError, ValueError, ArchitectureError, OSError) as e:
        code, message = 1, str(e)
    if message is not None:
        sys.stderr.write(f"error: {message}\n")
    return code


if __name__ == "__main__":
    sys.exit(main())
