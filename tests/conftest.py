from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

# NNI warns that some torch classes are "not a nn.Module" on import: harmless (DESIGN §8).
warnings.filterwarnings("ignore", message=".*not a nn.Module.*")

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


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory, data_root):
    """A tiny ``make demo`` with real nnictl (``strategies.pipeline`` profile ``tiny``), run once per session.

    Yields the pipeline summary (``out``, ``search_id``, ``search_port``, ``retrain_id``, ...); the
    search experiment's web UI stays up until the session ends.
    """
    from strategies import nnictl
    from strategies.pipeline import PROFILES, run_pipeline

    out = tmp_path_factory.mktemp("pipeline")
    summary = run_pipeline(out, PROFILES["tiny"], keep_search_ui=True)
    yield summary
    nnictl.stop(summary["search_id"])
