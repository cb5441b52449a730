"""Weight-sharing overhead: one supernet training step (active architecture) vs the standalone subnet.

Same architecture, same batch, same adversarial step (:func:`trainers.adversarial.adversarial_step`),
run interleaved (supernet, subnet, supernet, ...) so machine load hits both alike; reports the
median time of each and their ratio (floor: supernet / subnet <= 1.5).

    python -m benchmarks.bench_weight_sharing --batch-size 32 --repeats 5 --archs 3
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import statistics
import sys
import time

import torch

from search_space.encoding import SpaceConfig
from search_space.oneshot import activate, inherit_subnet, to_one_shot
from search_space.supernet import TamNasSpace
from trainers.adversarial import make_adversarial_config
from trainers.cli import quiet_third_party
from trainers.sampler import ArchitectureSampler, PhaseConfig, SamplerConfig

logger = logging.getLogger("benchmarks.bench_weight_sharing")


def _step_seconds(model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, opt: torch.optim.Optimizer,
                  config, seed: int) -> float:
    from trainers.adversarial import adversarial_step

    g = torch.Generator().manual_seed(seed)
    start = time.perf_counter()
    adversarial_step(model, x, y, opt, config, generator=g)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--repeats", type=int, default=5, help="timed steps per model and architecture")
    p.add_argument("--archs", type=int, default=3)
    p.add_argument("--method", default="trades_yopo")
    p.add_argument("--m", type=int, default=2)
    p.add_argument("--n", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)
    quiet_third_party()
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    space = SpaceConfig.for_dataset(args.dataset)
    config = make_adversarial_config({"method": args.method, "epsilon": 0.1, "sigma": 0.04, "m": args.m,
                                      "n": args.n, "steps": 3, "step_size": 0.04})
    supernet = to_one_shot(TamNasSpace(dataset=args.dataset))
    sampler = ArchitectureSampler(SamplerConfig(phases=(PhaseConfig(
        epochs=1, param_range=(1.4e6, 1.6e6), sample_ratios=True, initial_ratios=(0.8, 1.0, 1.2)),)),
        space, args.seed)
    x = torch.rand(args.batch_size, space.in_channels, 32, 32)
    y = torch.randint(0, space.num_classes, (args.batch_size,))
    rows = []
    for i in range(args.archs):
        arch = sampler.draw(0, i)[0]
        activate(supernet, arch)
        subnet = inherit_subnet(supernet, arch).train()
        opt_super = torch.optim.SGD(supernet.parameters(), lr=1e-3, momentum=0.9)
        opt_sub = torch.optim.SGD(subnet.parameters(), lr=1e-3, momentum=0.9)
        _step_seconds(supernet, x, y, opt_super, config, 0)  # warm-up
        _step_seconds(subnet, x, y, opt_sub, config, 0)
        t_super, t_sub = [], []
        for r in range(args.repeats):
            t_super.append(_step_seconds(supernet, x, y, opt_super, config, r))
            t_sub.append(_step_seconds(subnet, x, y, opt_sub, config, r))
        ratios = [a / b for a, b in zip(t_super, t_sub, strict=True)]
        row = {"arch": arch.key, "supernet_s": statistics.median(t_super), "subnet_s": statistics.median(t_sub),
               "ratio_median": statistics.median(ratios)}
        rows.append(row)
        logger.info("arch %d: supernet %.2f s, subnet %.2f s, ratio %.2f", i, row["supernet_s"],
                    row["subnet_s"], row["ratio_median"])
    summary = {"method": config.name, "batch_size": args.batch_size, "threads": args.threads,
               "repeats": args.repeats, "rows": rows,
               "ratio_median": statistics.median(r["ratio_median"] for r in rows)}
    sys.stdout.write(json.dumps(summary, indent=2) + "\n")
    return 0 if summary["ratio_median"] <= 1.5 else 1


if __name__ == "__main__":
    random.seed(0)
    sys.exit(main())
