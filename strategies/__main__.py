"""``python -m strategies``: run NSGA-II in-process, recompute an experiment's front, analyse a search."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from search_space.encoding import ArchitectureError, SpaceConfig, save_front

from .nsga2 import NSGA2Config, parse_objectives


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m strategies", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("search", help="in-process NSGA-II with an evaluation callback")
    s.add_argument("--evaluator", default="toy",
                   help="'toy' (analytic problem, strategies.toy) or 'module:function' (Architecture -> metric dict)")
    s.add_argument("--population", type=int, default=50)
    s.add_argument("--offspring", type=int, default=50)
    s.add_argument("--generations", type=int, default=20)
    s.add_argument("--tournament", type=int, default=10)
    s.add_argument("--mutation", type=float, default=0.1)
    s.add_argument("--crossover", type=float, default=0.9)
    s.add_argument("--crossover-unit", choices=["gene", "layer"], default="gene",
                   help="inherit block and ratio independently (gene) or together (layer)")
    s.add_argument("--mutation-unit", choices=["layer", "gene"], default="layer",
                   help="--mutation is the probability per layer or per block/ratio gene")
    s.add_argument("--duplicate-retries", type=int, default=10,
                   help="mutate an already-proposed child again up to this many times")
    s.add_argument("--seed", type=int, default=None)
    s.add_argument("--objectives", nargs="+", default=None, metavar="NAME:max|min")
    s.add_argument("--param-range", nargs=2, type=float, default=None, metavar=("LOW", "HIGH"),
                   help="repair into this parameter range (parameter table of --dataset/--width-multiplier)")
    s.add_argument("--blocks", default=None, metavar="ID,ID,...",
                   help="search only these block ids (Table XIV), e.g. 0,3,6,18 (default: all 22)")
    s.add_argument("--ratios", default=None, metavar="R,R,...",
                   help="search only these channel ratios (Table XV), e.g. 0.8,1.0,1.2 (default: all ten)")
    s.add_argument("--dataset", default="fashion_mnist")
    s.add_argument("--width-multiplier", type=int, default=1)
    s.add_argument("--output", default="runs/search", help="directory for front.json and history.csv")

    f = sub.add_parser("front", help="recompute front.json from an nnictl experiment or its export file")
    f.add_argument("source", help="experiment id or directory (running or stopped; read from NNI's database), "
                                  "or a file from `nnictl experiment export ID --type json`")
    f.add_argument("--objectives", nargs="+", default=None, metavar="NAME:max|min")
    f.add_argument("--dataset", default="fashion_mnist")
    f.add_argument("--width-multiplier", type=int, default=1)
    f.add_argument("--output", default="front.json")
    c = sub.add_parser("check", help="check an nnictl search config (classArgs, search space, trial limit) "
                                     "before `nnictl create`")
    c.add_argument("config", help="e.g. nni_configs/search.yml")
    sp = sub.add_parser("space", help="write the nnictl search_space.json derived from the encoding")
    sp.add_argument("--output", default="search_space.json")

    r = sub.add_parser("report", help="analysis report of a search and its retrains (Markdown + PNG + CSV)")
    r.add_argument("--search", required=True, metavar="ID_OR_DIR",
                   help="search experiment id (nnictl registry) or directory holding front.json")
    r.add_argument("--retrain", action="append", default=[], metavar="[LABEL=]ID_OR_DIR",
                   help="retrain experiment id or directory of result.json files; repeat for scratch and "
                        "fine-tune or for several supernet regimes; LABEL names the row (default: the id)")
    r.add_argument("--top-k", type=int, default=10, help="subnets counted in the block/ratio statistics")
    r.add_argument("--legonet", metavar="JSON",
                   help="the LegoNet to compare (default: built from this search's statistics)")
    r.add_argument("--out", required=True, help="report directory (report.md, PNGs, CSV/JSON)")

    lg = sub.add_parser("lego", help="block/ratio statistics of a search's top-k subnets and their LegoNet JSON")
    lg.add_argument("--search", required=True, metavar="ID_OR_DIR")
    lg.add_argument("--top-k", type=int, default=10)
    lg.add_argument("--front-top", type=int, default=None, metavar="N",
                    help="also write retrain_front.json: the first N front architectures plus the LegoNet "
                         "(input of `python -m trainers.retrain space`)")
    lg.add_argument("--out", required=True, help="directory for legonet.json, block_stats.csv, ratio_stats.csv, ...")
    return p


def _space(args: argparse.Namespace) -> None:
    import json

    from search_space.encoding import atomic_write_text

    from .space import nni_search_space

    atomic_write_text(args.output, json.dumps(nni_search_space(), indent=1) + "\n")
    print(f"wrote {args.output}")


def _comma_list(value: str | None, convert: type, option: str) -> list | None:
    """``"0,3,6"`` -> ``[0, 3, 6]``; ``ValueError`` naming the option on anything else."""
    if value is None:
        return None
    try:
        return [convert(x) for x in value.split(",")]
    except ValueError:
        raise ValueError(f"{option}: expected a comma-separated list of {convert.__name__}s, got {value!r}") from None


def _search(args: argparse.Namespace) -> None:
    from .runner import load_callable, run_search
    from .toy import toy_objectives

    space = SpaceConfig.for_dataset(args.dataset, args.width_multiplier)
    evaluate = toy_objectives if args.evaluator == "toy" else load_callable(args.evaluator)
    config = NSGA2Config(population_size=args.population, offspring_size=args.offspring,
                         generations=args.generations, tournament_size=args.tournament,
                         mutation_prob=args.mutation, crossover_prob=args.crossover,
                         crossover_unit=args.crossover_unit, mutation_unit=args.mutation_unit,
                         duplicate_retries=args.duplicate_retries, seed=args.seed,
                         objectives=parse_objectives(args.objectives),
                         param_range=tuple(args.param_range) if args.param_range else None,
                         blocks=_comma_list(args.blocks, int, "--blocks"),
                         ratios=_comma_list(args.ratios, float, "--ratios"))
    params_fn = None
    if config.param_range is not None:
        from .tuner import check_param_range, table_params_fn

        check_param_range(config, space)
        params_fn = table_params_fn(space)
    search = run_search(config, evaluate, params_fn=params_fn, output_dir=args.output, space=space)
    last = search.history[-1]
    print(f"{search.evaluations} evaluations, front of {last['front_size']}, hypervolume "
          f"{last['hypervolume']:.6f}; wrote {Path(args.output) / 'front.json'}")


def _front(args: argparse.Namespace) -> None:
    from .export import fetch_export, front_from_export, read_export_file

    objectives = parse_objectives(args.objectives)
    src = Path(args.source)
    entries = read_export_file(src) if src.is_file() else fetch_export(args.source)
    front = front_from_export(entries, objectives)
    space = SpaceConfig.for_dataset(args.dataset, args.width_multiplier)
    save_front(args.output, front, objectives, space, source=str(args.source), evaluations=len(entries))
    print(f"{len(entries)} trials, front of {len(front)}; wrote {args.output}")


def _report(args: argparse.Namespace) -> None:
    from search_space.encoding import load_architecture

    from .report import load_retrain, load_search, write_report

    search = load_search(args.search)
    retrains = [r for source in args.retrain for r in load_retrain(source)]
    lego = load_architecture(args.legonet, search.space) if args.legonet else None
    rep = write_report(search, retrains, args.out, top_k_count=args.top_k, lego=lego)
    print(f"wrote {rep.out / 'report.md'} ({len(rep.files)} files)")


def _lego(args: argparse.Namespace) -> None:
    from .report import load_search, search_statistics, write_retrain_front, write_statistics

    search = load_search(args.search)
    stats = search_statistics(search, args.top_k)
    out = Path(args.out)
    write_statistics(stats, search, out)
    line = f"top {stats.k} of {len(search.evaluated)}: LegoNet {stats.legonet.key}; wrote {out / 'legonet.json'}"
    if args.front_top is not None:
        if args.front_top < 0:
            raise ValueError(f"--front-top: must be >= 0, got {args.front_top}")
        archs = write_retrain_front(search, stats.legonet, args.front_top, out / "retrain_front.json")
        line += f" and {out / 'retrain_front.json'} ({len(archs)} architectures)"
    print(line)


def _check(args: argparse.Namespace) -> None:
    from .nnictl import check_search_config

    print(check_search_config(args.config))


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        {"search": _search, "front": _front, "space": _space, "report": _report, "lego": _lego,
         "check": _check}[args.command](args)
    except (ValueError, ArchitectureError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
