"""End to end with real nnictl on real Fashion-MNIST (a tiny version of ``make demo``)."""

from __future__ import annotations

import json

import pytest
import torch

from search_space.encoding import Architecture, load_architecture, load_front
from strategies import nnictl
from strategies.nsga2 import dominates_matrix, objective_matrix
from strategies.pipeline import PROFILES, run_pipeline
from tests.webui import Browser, trial_table_with_metric_columns

OBJECTIVE_KEYS = {"default", "adv_acc", "clean_acc", "params", "flops"}


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory, data_root):
    out = tmp_path_factory.mktemp("pipeline")
    summary = run_pipeline(out, PROFILES["tiny"], keep_search_ui=True)
    yield summary
    nnictl.stop(summary["search_id"])


@pytest.mark.slow
def test_front_is_valid_and_non_dominated(pipeline):
    out = pipeline["out"]
    archs, objectives, space = load_front(f"{out}/front.json")
    assert archs and space is not None and space.dataset == "fashion_mnist"
    assert [o.name for o in objectives] == ["adv_acc", "clean_acc", "params"]
    F = objective_matrix([a.objectives for a in archs], objectives)
    assert not dominates_matrix(F).any()
    history = open(f"{out}/history.csv").read().splitlines()
    assert history[0].startswith("generation") and len(history) == 1 + 2  # generations 0 and 1


@pytest.mark.slow
def test_every_trial_reached_nni(pipeline):
    port = pipeline["search_port"]
    assert nnictl.trial_counts(port) == {"SUCCEEDED": 8}
    finals = nnictl.metrics(port)
    assert len(finals) == 8
    for m in finals:
        assert OBJECTIVE_KEYS <= set(m)
        assert 0 <= m["adv_acc"] <= 1 and 0 <= m["clean_acc"] <= 1
        assert m["default"] == m["adv_acc"] and m["params"] > 1e6


@pytest.mark.slow
def test_evaluation_trial_gives_the_same_numbers_standalone(pipeline):
    """The numbers a trial reported inside NNI equal a standalone evaluation of the same architecture."""
    from trainers.search_trial import evaluate_architecture

    port = pipeline["search_port"]
    job = next(j for j in nnictl.rest(port, "trial-jobs") if j["status"] == "SUCCEEDED")
    params = json.loads(job["hyperParameters"][0])["parameters"]
    inside = json.loads(json.loads(job["finalMetricData"][0]["data"]))
    arch = Architecture.from_sample(params)
    torch.set_num_threads(1)
    standalone = evaluate_architecture(arch, f"{pipeline['out']}/supernet/checkpoints/last.ckpt",
                                       eval_examples=32, bn_batches=1, batch_size=32, steps=2, seed=0, device="cpu")
    for key in ("adv_acc", "clean_acc", "params", "flops", "epsilon", "num_examples"):
        assert standalone[key] == inside[key], key


@pytest.mark.slow
def test_web_ui_trial_table_shows_the_objectives(pipeline):
    with Browser() as browser:
        table = trial_table_with_metric_columns(browser, pipeline["search_port"], ["clean_acc", "adv_acc", "params"])
    assert table["clicked"] == 3
    for key in ("clean_acc", "adv_acc", "params"):
        assert f"{key} (metric)" in table["headers"]
    col = table["headers"].index("params (metric)")
    assert len(table["rows"]) >= 1 and all(float(r[col]) > 1e6 for r in table["rows"])


@pytest.mark.slow
def test_retrain_outputs(pipeline):
    out = pipeline["out"]
    rows = open(f"{out}/results.csv").read().splitlines()
    assert len(rows) == 2 and "clean_acc" in rows[0]
    assert "| Model | Size | Clean |" in open(f"{out}/results.md").read()
    from pathlib import Path

    trial_dirs = [p.parent for p in Path(out, "nni", pipeline["retrain_id"]).rglob("result.json")]
    assert len(trial_dirs) == 1
    d = trial_dirs[0]
    result = json.loads((d / "result.json").read_text())
    arch = load_architecture(d / "architecture.json")
    assert result["architecture"] == arch.key
    weights = torch.load(d / "weights.pt", weights_only=True)
    from search_space.supernet import build_subnet

    model = build_subnet(arch)
    model.load_state_dict(weights)
    scripted = torch.jit.load(str(d / "model.ts"))
    x = torch.rand(2, 1, 32, 32)
    torch.testing.assert_close(scripted(x), model.eval()(x))
    assert "seed: 0" in (d / "config.resolved.yml").read_text()
