"""The toy NNI trial: objectives computed from the architecture (:mod:`strategies.toy`).

``python -m strategies.toy_trial [--fail FRACTION] [--sleep SECONDS]`` inside an nnictl
experiment (flags in ``trialCommand``: no environment variable or classArg involved).

- ``--fail``: the architectures whose key hashes below ``FRACTION`` (:func:`fails`) fail
  (exit 1, no result) after receiving their parameters: the same ones in every run, so
  :func:`strategies.runner.run_search` can fail them too and give the same front.
- ``--dataset`` / ``--width``: the space whose FLOPs table gives the reported ``flops`` (exact
  FLOPs of one image, :mod:`search_space.flops`; default Fashion-MNIST at width 1), so a search
  can minimise ``flops`` beside the toy objectives.
- ``--sleep``: wait before reporting (trials still running when a test stops the experiment
  or kills one). Before it waits, a trial prints ``toy trial <pid>: <architecture key>`` (NNI's
  trial runtime logs prints to the trial's ``trial.log``).
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import os
import sys
import time

import nni

from search_space.architecture import Architecture
from search_space.flops import count_flops
from search_space.space import SpaceConfig
from strategies.toy import toy_objectives

_logger = logging.getLogger(__name__)


def fails(arch: Architecture, fraction: float) -> bool:
    """Deterministic failure injection: True for about ``fraction`` of architectures."""
    h = int(hashlib.sha256(arch.key.encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m strategies.toy_trial", description=__doc__.split("\n\n")[0])
    p.add_argument("--fail", type=float, default=0.0, metavar="FRACTION",
                   help="fraction of architectures that fail, chosen by a hash of the key (default 0)")
    p.add_argument("--sleep", type=float, default=0.0, metavar="SECONDS", help="wait before reporting (default 0)")
    p.add_argument("--dataset", default="fashion_mnist", help="space of the reported flops (default fashion_mnist)")
    p.add_argument("--width", type=int, default=1, help="width multiplier of that space (default 1)")
    args = p.parse_args(argv)
    space = SpaceConfig.for_dataset(args.dataset, args.width)
    arch = Architecture.from_sample(nni.get_next_parameter())
    if fails(arch, args.fail):
        _logger.error("injected failure for %s", arch.key)
        return 1
    print(f"toy trial {os.getpid()}: {arch.key}", flush=True)
    time.sleep(args.sleep)
    metrics = {**toy_objectives(arch), "flops": float(count_flops(arch, space))}
    nni.report_final_result({"default": metrics["adv_acc"], **metrics})
    return 0


if __name__ == "__main__":
    sys.exit(main())
