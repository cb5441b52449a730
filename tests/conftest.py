from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def data_root() -> Path:
    """Where the real data sets live (``$TAMNAS_DATA`` or ``<repo>/data``); fails if Fashion-MNIST is missing."""
    root = Path(os.environ.get("TAMNAS_DATA", REPO / "data"))
    raw = root / "FashionMNIST" / "raw"
    if not (raw / "train-images-idx3-ubyte").exists():
        pytest.fail(f"Fashion-MNIST not found under {raw}: run `make data` "
                    "(python -m trainers.data fetch --dataset fashion_mnist --root data)")
    return root


class _TerminalHandler(logging.Handler):
    """Log records on the terminal while pytest captures output (a slow fixture says what it does)."""

    def __init__(self, config: pytest.Config) -> None:
        super().__init__(logging.INFO)
        self.capture = config.pluginmanager.getplugin("capturemanager")
        self.setFormatter(logging.Formatter("  [pipeline fixture %(asctime)s] %(message)s", "%H:%M:%S"))

    def emit(self, record: logging.LogRecord) -> None:
        if self.capture is None:  # pytest -p no:capture
            sys.stderr.write(self.format(record) + "\n")
            return
        with self.capture.global_and_fixture_disabled():
            sys.stderr.write(self.format(record) + "\n")
            sys.stderr.flush()


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory, data_root, request):
    """A tiny ``make demo`` with real nnictl (``workflow.pipeline`` profile ``tiny``), run once per session.

    Yields the pipeline summary (``out``, ``search_id``, ``search_port``, ``retrain_id``, ...); the
    search experiment's web UI stays up until the session ends. Its stages and progress are logged
    on the terminal (it takes minutes).
    """
    from workflow import nnictl
    from workflow.pipeline import PROFILES, run_pipeline

    out = tmp_path_factory.mktemp("pipeline")
    handler = _TerminalHandler(request.config)
    log = logging.getLogger("workflow")
    level = log.level
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        logging.getLogger("workflow").info("tiny pipeline (supernet, nnictl search, retrain, report) into %s", out)
        summary = run_pipeline(out, PROFILES["tiny"], keep_search_ui=True)
        logging.getLogger("workflow").info("done in %.0f s", summary["wall_seconds"])
    finally:
        log.removeHandler(handler)
        log.setLevel(level)
    yield summary
    nnictl.stop(summary["search_id"])
