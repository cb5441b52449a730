"""``python -m search_space``: inspect the TAM-NAS space, sample architectures, count their parameters,
write the nnictl search space."""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from collections.abc import Mapping

from .architecture import Architecture
from .cli import Parser, UsageError, add_out, add_space, int_at_least, run, space_from_flags
from .files import (
    FRONT_FORMAT,
    atomic_write_text,
    front_to_dict,
    load_architecture,
    load_front,
    read_json,
    read_space,
)
from .params import count_params, random_architecture, space_statistics
from .space import (
    BLOCKS,
    DEFAULT_READING,
    NUM_LAYERS,
    RATIOS,
    READINGS,
    STRIDE2_LAYERS,
    ArchitectureError,
    SpaceConfig,
    layer_channels,
    nni_search_space,
)

logger = logging.getLogger(__name__)

DEFAULT_DATASET, DEFAULT_WIDTH = "fashion_mnist", 1


def _emit(text: str, out: str | None) -> None:
    text = text if text.endswith("\n") else text + "\n"
    if out:
        atomic_write_text(out, text)
        logger.info("wrote %s", out)
    else:
        sys.stdout.write(text)


def cmd_info(args: argparse.Namespace) -> None:
    space = SpaceConfig.for_dataset(args.dataset, args.width, args.reading)
    stats = space_statistics(space, samples=args.samples, seed=args.seed)
    info = {
        "space": space.to_dict(),
        "layers": [{"layer": i, "channels": list(layer_channels(i, args.width)),
                    "stride": 2 if i in STRIDE2_LAYERS else 1} for i in range(NUM_LAYERS)],
        "blocks": [{"id": b.id, "short": b.short, "name": b.name} for b in BLOCKS],
        "ratios": list(RATIOS),
        "stride2_layers": list(STRIDE2_LAYERS),
        "params": stats,
    }
    if args.json:
        _emit(json.dumps(info, indent=2), None)
        return
    lines = [f"TAM-NAS space for {space.dataset} (width x{space.width_multiplier}, "
             f"{space.in_channels} input channel(s), {space.num_classes} classes, 32x32)",
             f"{NUM_LAYERS} choice layers; stride 2 at layers {list(STRIDE2_LAYERS)} "
             "(no pure robust block there)", f"ratios: {list(RATIOS)}", "blocks:"]
    lines += [f"  {b.id:2d}  {b.short:10s} {b.name}" for b in BLOCKS]
    lines.append(f"parameters: min {stats['min']:,}  median {stats['median']:,.0f}  max {stats['max']:,} "
                 f"(median of {stats['median_samples']} uniform samples, seed {stats['seed']})")
    _emit("\n".join(lines), None)


def cmd_sample(args: argparse.Namespace) -> None:
    space = SpaceConfig.for_dataset(args.dataset, args.width)
    rng = random.Random(args.seed)
    archs = []
    for _ in range(args.n):
        arch = random_architecture(rng)
        archs.append(arch.with_info({"params": count_params(arch, space)}, {"sampled_with_seed": args.seed}))
    if args.n == 1:
        _emit(json.dumps(archs[0].to_dict(space), indent=2), args.out)
    else:
        _emit(json.dumps(front_to_dict(archs, (), space), indent=2), args.out)


def _read_arch(args: argparse.Namespace) -> tuple[Architecture, SpaceConfig]:
    """The architecture ``params`` counts and its space (the file's own; the flags must agree with it)."""
    d = read_json(args.arch)
    is_front = isinstance(d, Mapping) and d.get("format") == FRONT_FORMAT
    if is_front:
        archs, _, _ = load_front(args.arch)  # validates every entry
        if args.index is None and len(archs) != 1:
            raise UsageError(f"{args.arch} is a front of {len(archs)} architectures: choose one with "
                             f"--index K (0..{len(archs) - 1})")
        arch = load_architecture(args.arch, index=0 if args.index is None else args.index)
    elif args.index is not None:
        raise UsageError(f"--index: {args.arch} holds one architecture, not a front")
    else:
        arch = load_architecture(args.arch)  # validates the file's own space, if it records one
    space = space_from_flags(args, read_space(args.arch), str(args.arch))
    assert space is not None
    return arch, space


def cmd_params(args: argparse.Namespace) -> None:
    arch, space = _read_arch(args)
    n = count_params(arch, space)
    result = {"params": n, "space": space.to_dict()}
    if args.check:
        from .supernet import build_subnet

        built = sum(p.numel() for p in build_subnet(arch, space).parameters())
        result["built_params"] = built
        if built != n:
            raise ArchitectureError(f"parameter table says {n} but the built model has {built}")
    _emit(json.dumps(result) if args.json else f"{n}" + (" (checked against the built model)"
                                                          if args.check else ""), None)


def cmd_sizes(args: argparse.Namespace) -> None:
    from .sizes import fit_table, markdown

    rows = fit_table(args.dataset)
    _emit(json.dumps(rows, indent=2) if args.json else markdown(rows), args.out)


def cmd_export_space(args: argparse.Namespace) -> None:
    _emit(json.dumps(nni_search_space(), indent=2), args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="python -m search_space", description="The TAM-NAS search space (paper Tables I, XIV, XV).")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=Parser)
    dataset_help = f"data set (default: {DEFAULT_DATASET}; the output records the space)"
    width_help = f"width multiplier (default: {DEFAULT_WIDTH})"
    p = sub.add_parser("info", help="blocks, ratios, layers and the parameter range of the space")
    add_space(p, dataset_help, width_help, dataset=DEFAULT_DATASET, width=DEFAULT_WIDTH)
    p.add_argument("--reading", choices=list(READINGS), default=DEFAULT_READING,
                   help=f"reading of Table I (default: {DEFAULT_READING}; README \"Model sizes\")")
    p.add_argument("--json", action="store_true")
    p.add_argument("--samples", type=int_at_least(1), default=20000, help="random architectures for the median")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("sample", help="N random valid architectures as JSON (seeded)",
                       description="N seeded random architectures. -n 1 writes one architecture file "
                                   "(format tamnas-architecture); -n N > 1 a front file (format tamnas-front) "
                                   "of N architectures, of which `params FILE --index K` counts the K-th.")
    add_space(p, dataset_help, width_help, dataset=DEFAULT_DATASET, width=DEFAULT_WIDTH)
    p.add_argument("-n", type=int_at_least(1), default=1,
                   help="how many (default 1: one architecture file; more: a front file)")
    p.add_argument("--seed", type=int, default=0)
    add_out(p, "write here instead of stdout")
    p.set_defaults(func=cmd_sample)
    p = sub.add_parser("params", help="parameter count of an architecture from the parameter table",
                       description="Parameter count of an architecture file, an NNI sample file, or the "
                                   "K-th architecture of a front file (--index K), in the space the file records.")
    p.add_argument("arch", help="architecture, NNI sample or front JSON file")
    p.add_argument("--index", type=int_at_least(0), metavar="K",
                   help="the K-th architecture (0-based) of a front file; needed when it holds more than one")
    add_space(p, "data set: needed when the file records no space; must agree with the file's otherwise",
              "width multiplier: needed when the file records no space; must agree with the file's otherwise")
    p.add_argument("--check", action="store_true", help="also build the model and compare")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_params)
    p = sub.add_parser("sizes", help="how each reading of Table I fits the paper's model sizes (README table)",
                       description="The paper's reported sizes (LegoNet at width 2, the 1x and 2x subnets, the "
                                   "+24.4 %% growth, the block-phase constraint) against every reading's "
                                   "parameter table, as the README's Markdown table.")
    p.add_argument("--dataset", choices=["cifar10", "svhn"], default="cifar10",
                   help="data set of the paper's sizes (default: cifar10)")
    p.add_argument("--json", action="store_true")
    add_out(p, "write here instead of stdout")
    p.set_defaults(func=cmd_sizes)
    p = sub.add_parser("export-space", help="the nnictl search_space.json (equal to TamNasSpace().simplify())")
    add_out(p, "write here instead of stdout")
    p.set_defaults(func=cmd_export_space)
    return parser


def main(argv: list[str] | None = None) -> int:
    return run(build_parser(), argv)


if __name__ == "__main__":
    sys.exit(main())
