"""How good is a trained supernet? Random subnets scored with inherited weights (issue [supernet]).

Draws ``--archs`` random architectures from the distribution the supernet was trained on (its
last sampling phase: blocks, parameter range and the ratio set in use when training ended; seeded), and scores each exactly like
a search trial (:func:`trainers.search_trial.evaluate_inherited`): inherit weights, recalibrate
BN on training batches, clean and PGD accuracy on the validation split. Prints a table and the
best of N; ``--out`` writes the same as JSON (with the checkpoint's wall time and config).

    python -m benchmarks.bench_supernet_quality runs/demo/supernet/checkpoints/last.ckpt \\
        --archs 10 --eval-examples 1000 --steps 10 --epsilon 0.1
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
from pathlib import Path

import torch

from search_space.encoding import atomic_write_text
from trainers.checkpoint import load_supernet
from trainers.cli import setup_logging
from trainers.config import build_config
from trainers.sampler import ArchitectureSampler
from trainers.search_trial import evaluate_inherited
from trainers.supernet import SupernetConfig

logger = logging.getLogger("benchmarks.bench_supernet_quality")


def random_subnets(meta: dict, space, n: int, seed: int):
    """``n`` architectures from the distribution the sampler used at the checkpoint (its phase and ratio set)."""
    resolved = {k: v for k, v in meta["config"].items() if k in SupernetConfig.__dataclass_fields__}
    config = build_config(SupernetConfig, resolved, "checkpoint config: ")
    sampler = ArchitectureSampler(config.sampler, space, seed)
    sampler.load_state_dict(meta["sampler"])
    rng = random.Random(f"bench-{seed}")
    return [sampler.sample_at(int(meta["epoch"]), int(meta["global_step"]), rng) for _ in range(n)]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("checkpoint", type=Path, help="supernet checkpoint (last.ckpt)")
    p.add_argument("--archs", type=int, default=10)
    p.add_argument("--eval-examples", type=int, default=1000, help="first N validation images")
    p.add_argument("--bn-batches", type=int, default=20)
    p.add_argument("--batch-size", type=int, default=100)
    p.add_argument("--steps", type=int, default=10, help="PGD steps")
    p.add_argument("--epsilon", type=float, help="PGD ε (default: the supernet's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int)
    p.add_argument("--out", type=Path, help="write the results as JSON")
    args = p.parse_args(argv)
    setup_logging()
    if args.threads:
        torch.set_num_threads(args.threads)

    supernet, space, meta = load_supernet(args.checkpoint)
    archs = random_subnets(meta, space, args.archs, args.seed)
    rows = []
    for i, arch in enumerate(archs):
        m = evaluate_inherited(arch, supernet, space, meta, bn_batches=args.bn_batches,
                               eval_examples=args.eval_examples, epsilon=args.epsilon, steps=args.steps,
                               batch_size=args.batch_size, seed=args.seed, device="cpu")
        rows.append({"architecture": arch.key, **m})
        logger.info("subnet %d/%d %s: clean %.4f adv %.4f params %d", i + 1, len(archs), arch.key,
                    m["clean_acc"], m["adv_acc"], m["params"])
    best_clean = max(r["clean_acc"] for r in rows)
    best_adv = max(r["adv_acc"] for r in rows)
    print(f"| # | params | clean | PGD-{args.steps} ε={rows[0]['epsilon']:g} |\n|---|---|---|---|")
    for i, r in enumerate(rows):
        print(f"| {i} | {r['params']:,} | {100 * r['clean_acc']:.1f} | {100 * r['adv_acc']:.1f} |")
    print(f"best of {len(rows)}: clean {100 * best_clean:.1f}%, PGD {100 * best_adv:.1f}% "
          f"({rows[0]['num_examples']} validation images; supernet: epoch {meta.get('epoch')}, "
          f"step {meta.get('global_step')})")
    if args.out:
        atomic_write_text(args.out, json.dumps({"checkpoint": str(args.checkpoint), "args": vars(args) | {
            "checkpoint": str(args.checkpoint), "out": str(args.out)}, "subnets": rows,
            "best_clean_acc": best_clean, "best_adv_acc": best_adv,
            "supernet_config": meta["config"]}, indent=2, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
