"""Throughput of one adversarial training step per method, measured side by side.

Run from the repository root::

    python -m benchmarks.bench_adversarial [--json] [--batch 128] [--repeats 10] [--warmup 2]
        [--threads N]

Model (``--model subnet``, the default): a real TAM-NAS subnet, the LegoNet of the paper's
Tables XIV/XV built for CIFAR-10 at width 1 -- the network the search trains.
``--model smallcnn``: :class:`trainers.models.SmallCNN` in the stage layout of the paper's
Table I -- stem (layer one) of 24 channels at full resolution, then three
stride-2 stages of 48/96/192 channels with ``--depth`` 3×3 convolutions each
(default 3: 10 conv layers, about 1.1M parameters; the stem is under 2 % of the
multiply-adds) -- on CIFAR-sized random inputs (3×32×32, 10 classes). The paper's
subnets have 16 choice blocks; ``--depth 2`` gives a shallower net whose
layer-one share is larger. Methods: clean, PGD-AT-10,
TRADES-PGD-10, TRADES-YOPO-5-3, YOPO-5-3 (paper/YOPO defaults). Each repeat
times one step of every method in a rotated order (the machine is noisy, so
methods are interleaved rather than run one after the other); the median step
time per method is reported as images/s and as ratios to clean and to
TRADES-PGD-10.

Two pass-counting bounds for TRADES-YOPO-5-3 / TRADES-PGD-10 are reported, with the
measured ratio's distance to each; both ignore layer one, so YOPO's 15 layer-one steps
come on top of either:

* weighted, 17/27 ≈ 0.630: a full forward counts 1, an input-only backward 1 and a
  backward with parameter gradients 2. TRADES-PGD-10 = 1 (q) + 10·2 (attack) + 2·3
  (clean + adversarial training passes) = 27; TRADES-YOPO-5-3 = 1 + 5·2 + 6 = 17.
* the issue's "about 0.66×": whole forward/backward attack passes, five instead of ten,
  plus the final step both share as one lump, (5 + s)/(10 + s); 0.66 corresponds to
  s ≈ 4.7 attack passes. The weighted count puts the shared part (q and the training
  passes, 7 units) at 3.5 attack passes (2 units each), hence its lower value.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import platform
import statistics
import sys
import time

import torch

from trainers.adversarial import AdversarialConfig, adversarial_step
from trainers.models import SmallCNN

logger = logging.getLogger(__name__)

METHODS: dict[str, AdversarialConfig] = {
    "clean": AdversarialConfig(method="clean"),
    "PGD-AT-10": AdversarialConfig(method="pgd_at", steps=10),
    "TRADES-PGD-10": AdversarialConfig(method="trades", steps=10),
    "TRADES-YOPO-5-3": AdversarialConfig(method="trades_yopo", m=5, n=3),
    "YOPO-5-3": AdversarialConfig(method="yopo", m=5, n=3),
}
PASS_BOUND = 17 / 27  # weighted pass count, see the module docstring
ISSUE_PASS_BOUND = 0.66  # the issue's count: 5 attack passes instead of 10 plus the shared final step
FLOOR = 0.75  # TRADES-YOPO-5-3 must cost at most this fraction of a TRADES-PGD-10 step


def model_spec(model: str, depth: int) -> str:
    if model == "subnet":
        return "TAM-NAS subnet: LegoNet of the paper's Tables XIV/XV, CIFAR-10, width 1"
    return f"SmallCNN(3, 10, stem_width=24, widths=(48, 96, 192), strides=(2, 2, 2), depth={depth})"


def build_model(model: str, depth: int) -> torch.nn.Module:
    if model == "subnet":
        from search_space.encoding import SpaceConfig
        from search_space.legonet import legonet_from_files
        from search_space.supernet import build_subnet

        return build_subnet(legonet_from_files(), SpaceConfig.for_dataset("cifar10", 1))
    return SmallCNN(3, 10, stem_width=24, widths=(48, 96, 192), strides=(2, 2, 2), depth=depth)


def run(batch: int, repeats: int, *, model: str = "subnet", depth: int = 3, warmup: int = 2,
        seed: int = 0) -> dict:
    """Time every method ``repeats`` times after ``warmup`` untimed rounds, interleaved; return a summary."""
    torch.manual_seed(seed)
    base = build_model(model, depth)
    x = torch.rand(batch, 3, 32, 32)
    y = torch.randint(0, 10, (batch,))
    models = {name: copy.deepcopy(base) for name in METHODS}
    optimizers = {
        name: torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9) for name, model in models.items()
    }
    names = list(METHODS)
    times: dict[str, list[float]] = {name: [] for name in names}
    for r in range(warmup + repeats):
        shift = r % len(names)
        for name in names[shift:] + names[:shift]:  # rotate the order each repeat
            start = time.perf_counter()
            adversarial_step(models[name], x, y, optimizers[name], METHODS[name])
            elapsed = time.perf_counter() - start
            if r >= warmup:
                times[name].append(elapsed)
    median = {name: statistics.median(t) for name, t in times.items()}
    results = {
        name: {
            "median_step_s": median[name],
            "images_per_s": batch / median[name],
            "cost_vs_clean": median[name] / median["clean"],
            "cost_vs_trades_pgd10": median[name] / median["TRADES-PGD-10"],
        }
        for name in names
    }
    ratio = results["TRADES-YOPO-5-3"]["cost_vs_trades_pgd10"]
    return {
        "model": model_spec(model, depth),
        "params": sum(p.numel() for p in base.parameters()),
        "input": [batch, 3, 32, 32],
        "repeats": repeats,
        "warmup": warmup,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "results": results,
        "trades_yopo_vs_trades_pgd10": ratio,
        "pass_counting_bound": PASS_BOUND,
        "issue_pass_counting_bound": ISSUE_PASS_BOUND,
        # measured ratio minus each bound (> 0: slower than the count predicts)
        "above_pass_counting_bound": ratio - PASS_BOUND,
        "above_issue_pass_counting_bound": ratio - ISSUE_PASS_BOUND,
        "floor": FLOOR,
        "meets_floor": ratio <= FLOOR,
    }


def format_table(summary: dict) -> str:
    lines = [
        "| method | step (ms, median) | images/s | cost vs clean | cost vs TRADES-PGD-10 |",
        "|---|---|---|---|---|",
    ]
    for name, r in summary["results"].items():
        lines.append(
            f"| {name} | {1000 * r['median_step_s']:.1f} | {r['images_per_s']:.0f} | "
            f"{r['cost_vs_clean']:.2f}× | {r['cost_vs_trades_pgd10']:.2f}× |"
        )
    lines.append("")
    lines.append(
        f"TRADES-YOPO-5-3 / TRADES-PGD-10 = {summary['trades_yopo_vs_trades_pgd10']:.3f} "
        f"(floor {summary['floor']}; {'meets' if summary['meets_floor'] else 'MISSES'} the floor)"
    )
    lines.append(
        f"pass-counting bounds: weighted 17/27 = {summary['pass_counting_bound']:.3f} "
        f"({summary['above_pass_counting_bound']:+.3f} above), "
        f"issue's count {summary['issue_pass_counting_bound']:.2f} "
        f"({summary['above_issue_pass_counting_bound']:+.3f} above)"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=128, help="batch size (default 128)")
    parser.add_argument("--repeats", type=int, default=10, help="timed steps per method (default 10)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed rounds before timing (default 2)")
    parser.add_argument("--model", choices=("subnet", "smallcnn"), default="subnet",
                        help="a TAM-NAS subnet (LegoNet, default) or the plain SmallCNN")
    parser.add_argument("--depth", type=int, default=3, help="SmallCNN: conv layers per stage (default 3)")
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default: torch's)")
    parser.add_argument("--json", action="store_true", help="print the summary as JSON")
    args = parser.parse_args(argv)
    for flag, value, least in (("--batch", args.batch, 1), ("--repeats", args.repeats, 1),
                               ("--warmup", args.warmup, 0), ("--depth", args.depth, 1),
                               ("--threads", args.threads, 1)):
        if value is not None and value < least:
            parser.error(f"{flag} must be >= {least}, got {value}")
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    summary = run(args.batch, args.repeats, model=args.model, depth=args.depth, warmup=args.warmup)
    sys.stdout.write((json.dumps(summary, indent=2) if args.json else format_table(summary)) + "\n")
    return 0 if summary["meets_floor"] else 1


if __name__ == "__main__":
    raise SystemExit(main())
