"""The toy NNI trial: objectives computed from the architecture (:mod:`strategies.toy`).

``python -m strategies.toy_trial`` inside an nnictl experiment. Set ``TAMNAS_TOY_FAIL``
to a float in [0, 1] to make that fraction of architectures fail (chosen by a hash of the
architecture, so the same ones fail in every run), and ``TAMNAS_TOY_SLEEP`` to seconds to
wait before reporting (trials that are still running when a test stops the experiment).
"""

from __future__ import annotations

import hashlib
import logging
import os
import sys
import time

import nni

from search_space.architecture import Architecture
from strategies.toy import toy_objectives

_logger = logging.getLogger(__name__)


def fails(arch: Architecture, fraction: float) -> bool:
    """Deterministic failure injection: True for about ``fraction`` of architectures."""
    h = int(hashlib.sha256(arch.key.encode()).hexdigest()[:8], 16)
    return h / 0xFFFFFFFF < fraction


def main() -> int:
    params = nni.get_next_parameter()
    arch = Architecture.from_sample(params)
    if fails(arch, float(os.environ.get("TAMNAS_TOY_FAIL", "0"))):
        _logger.error("injected failure for %s", arch.key)
        return 1
    time.sleep(float(os.environ.get("TAMNAS_TOY_SLEEP", "0")))
    metrics = toy_objectives(arch)
    nni.report_final_result({"default": metrics["adv_acc"], **metrics})
    return 0


if __name__ == "__main__":
    sys.exit(main())
