"""``python -m search_space``: inspect the TAM-NAS space, sample, count parameters, build LegoNet."""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import warnings
from pathlib import Path
from typing import NoReturn

from .encoding import (
    BLOCKS,
    DATASET_SHAPES,
    NUM_LAYERS,
    RATIOS,
    STRIDE2_LAYERS,
    WIDTH_MULTIPLIERS,
    ArchitectureError,
    SpaceConfig,
    atomic_write_text,
    front_to_dict,
    layer_channels,
    load_architecture,
    read_space,
)
from .params import count_params, random_architecture, space_statistics

logger = logging.getLogger("search_space")


class UsageError(Exception):
    """A bad command line; :func:`main` prints it as one ``error: ...`` line and exits 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, but an error is one line (no usage block): ``error: argument -n: invalid int value: 'abc'``."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


def _at_least_one(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid int value: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} is not allowed; expected an integer >= 1")
    return value


DEFAULT_DATASET, DEFAULT_WIDTH = "fashion_mnist", 1


def _space_args(p: argparse.ArgumentParser, from_file: bool = False) -> None:
    """``--dataset``/``--width``; with ``from_file`` they default to the space the file records."""
    if from_file:
        p.add_argument("--dataset", choices=sorted(DATASET_SHAPES),
                       help=f"default: the file's space, else {DEFAULT_DATASET}; must agree with the file's")
        p.add_argument("--width", type=int, choices=WIDTH_MULTIPLIERS,
                       help=f"width multiplier (default: the file's space, else {DEFAULT_WIDTH}; "
                            "must agree with the file's)")
    else:
        p.add_argument("--dataset", default=DEFAULT_DATASET, choices=sorted(DATASET_SHAPES))
        p.add_argument("--width", type=int, default=DEFAULT_WIDTH, choices=WIDTH_MULTIPLIERS,
                       help="width multiplier")


def _emit(text: str, out: str | None) -> None:
    if out:
        atomic_write_text(out, text if text.endswith("\n") else text + "\n")
        logger.info("wrote %s", out)
    else:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def cmd_info(args: argparse.Namespace) -> None:
    space = SpaceConfig.for_dataset(args.dataset, args.width)
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
        archs.append(arch.__class__(arch.blocks, arch.ratios,
                                    objectives={"params": count_params(arch, space)},
                                    provenance={"sampled_with_seed": args.seed}))
    if args.n == 1:
        _emit(json.dumps(archs[0].to_dict(space), indent=2), args.out)
    else:
        _emit(json.dumps(front_to_dict(archs, (), space), indent=2), args.out)


def _file_space(args: argparse.Namespace) -> SpaceConfig:
    """The space of ``args.arch``: the file's own; ``--dataset``/``--width`` if given must agree with it."""
    file_space = read_space(args.arch)
    if file_space is None:
        return SpaceConfig.for_dataset(args.dataset or DEFAULT_DATASET,
                                       DEFAULT_WIDTH if args.width is None else args.width)
    for flag, given, field in (("--dataset", args.dataset, "dataset"), ("--width", args.width, "width_multiplier")):
        recorded = getattr(file_space, field)
        if given is not None and given != recorded:
            raise ArchitectureError(f"{args.arch}.space.{field}: {recorded}, but {flag} {given} was given "
                                    f"(drop {flag} to use the file's space)")
    return file_space


def cmd_params(args: argparse.Namespace) -> None:
    arch = load_architecture(args.arch)  # validates the file's own space, if it records one
    space = _file_space(args)
    n = count_params(arch, space)
    result = {"params": n, "space": space.to_dict()}
    if args.check:
        warnings.filterwarnings("ignore", message=".*not a nn.Module.*")
        from .supernet import build_subnet

        built = sum(p.numel() for p in build_subnet(arch, space).parameters())
        result["built_params"] = built
        if built != n:
            raise ArchitectureError(f"parameter table says {n} but the built model has {built}")
    _emit(json.dumps(result) if args.json else f"{n}" + (" (checked against the built model)"
                                                          if args.check else ""), None)


def cmd_lego(args: argparse.Namespace) -> None:
    from .legonet import PAPER_BLOCK_STATS, PAPER_RATIO_STATS, legonet_from_files

    space = SpaceConfig.for_dataset(args.dataset, args.width)
    arch = legonet_from_files(args.block_stats or PAPER_BLOCK_STATS, args.ratio_stats or PAPER_RATIO_STATS)
    arch = arch.__class__(arch.blocks, arch.ratios, objectives={"params": count_params(arch, space)},
                          provenance={"built_by": "legonet",
                                      "block_stats": str(args.block_stats or "paper Table XIV"),
                                      "ratio_stats": str(args.ratio_stats or "paper Table XV")})
    _emit(json.dumps(arch.to_dict(space), indent=2), args.out)


def cmd_export_space(args: argparse.Namespace) -> None:
    warnings.filterwarnings("ignore", message=".*not a nn.Module.*")
    from .supernet import TamNasSpace, nni_search_space

    _emit(json.dumps(nni_search_space(TamNasSpace(dataset=args.dataset, width_multiplier=args.width)),
                     indent=2), args.out)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="python -m search_space",
                                     description="The TAM-NAS search space (paper Tables I, XIV, XV).")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("info", help="blocks, ratios, layers and the parameter range of the space")
    _space_args(p)
    p.add_argument("--json", action="store_true")
    p.add_argument("--samples", type=_at_least_one, default=20000, help="random architectures for the median")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_info)
    p = sub.add_parser("sample", help="N random valid architectures as JSON (seeded)")
    _space_args(p)
    p.add_argument("-n", type=_at_least_one, default=1, help="how many (at least 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", help="write here instead of stdout")
    p.set_defaults(func=cmd_sample)
    p = sub.add_parser("params", help="parameter count of ARCH.json from the parameter table")
    p.add_argument("arch", help="architecture JSON file")
    _space_args(p, from_file=True)
    p.add_argument("--check", action="store_true", help="also build the model and compare")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_params)
    p = sub.add_parser("lego", help="LegoNet JSON from block/ratio statistics (default: the paper's)")
    _space_args(p)
    p.add_argument("--block-stats", type=Path, help="Table XIV-style CSV (layer, 0..21)")
    p.add_argument("--ratio-stats", type=Path, help="Table XV-style CSV (layer, 0..9)")
    p.add_argument("--out")
    p.set_defaults(func=cmd_lego)
    p = sub.add_parser("export-space", help="the nnictl search_space.json, generated from the ModelSpace")
    _space_args(p)
    p.add_argument("--out")
    p.set_defaults(func=cmd_export_space)
    return parser


def main(argv: list[str] | None = None) -> int:
    try:
        args = build_parser().parse_args(argv)  # --help still prints and exits 0
    except UsageError as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        args.func(args)
    except (ArchitectureError, ValueError, OSError) as e:
        sys.stderr.write(f"error: {e}\n")
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
