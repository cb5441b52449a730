"""End to end with real nnictl on real Fashion-MNIST (a tiny version of ``make demo``)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

from search_space.encoding import Architecture, load_architecture, load_front, save_architecture
from search_space.params import count_params
from search_space.supernet import build_subnet
from strategies.export import fetch_export
from strategies.objectives import objective_matrix
from strategies.operators import dominates_matrix
from tests.conftest import REPO
from tests.webui import Browser, trial_table_with_metric_columns
from trainers.checkpoint import load_supernet
from workflow import nnictl
from workflow.pipeline import PROFILES

OBJECTIVE_KEYS = {"default", "adv_acc", "clean_acc", "params", "flops"}


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
def test_results_are_paired_with_the_architecture_the_trial_ran(pipeline):
    """Every exported result belongs to its architecture (NNI's own export can swap them, docs/architecture.md §8)."""
    _, space, _ = load_supernet(f"{pipeline['out']}/supernet/checkpoints/last.ckpt")
    trials = fetch_export(pipeline["search_id"])
    assert len(trials) == 8
    for t in trials:
        assert json.loads(t["value"])["params"] == count_params(Architecture.from_sample(t["parameter"]), space)
    front, _, _ = load_front(f"{pipeline['out']}/front.json")
    for a in front:
        assert a.objectives["params"] == count_params(a, space)


@pytest.mark.slow
def test_evaluation_trial_gives_the_same_numbers_standalone(pipeline, tmp_path):
    """The numbers a trial reported inside NNI equal ``python -m trainers evaluate --arch`` run by hand.

    Run in a fresh process, as a user would: the pytest process carries global torch state
    from other tests.
    """
    trial = fetch_export(pipeline["search_id"])[0]
    inside = json.loads(trial["value"])
    arch_file = tmp_path / "arch.json"
    save_architecture(Architecture.from_sample(trial["parameter"]), arch_file)
    # the flags of the trial command NNI ran (search.yml), on the architecture that trial reported
    trial_argv = shlex.split(yaml.safe_load((Path(pipeline["out"]) / "search.yml").read_text())["trialCommand"])
    assert trial_argv[1:3] == ["-m", "trainers.search_trial"]
    cmd = [sys.executable, "-m", "trainers", "evaluate", "--arch", str(arch_file), *trial_argv[3:]]
    proc = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    standalone = json.loads(proc.stdout.strip().splitlines()[-1])
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
    """One trial per retrained architecture (the front's picks + LegoNet), each with loadable outputs."""
    out = Path(pipeline["out"])
    retrained = json.loads((out / "retrain_space.json").read_text())["arch"]["_value"]
    assert 1 <= len(retrained) <= 1 + len(PROFILES["tiny"].retrain_roles)  # LegoNet may be a pick
    front, _, _ = load_front(out / "front.json")
    best_adv = max(front, key=lambda a: (a.objectives["adv_acc"], a.objectives["clean_acc"], -a.objectives["params"]))
    assert best_adv.key in retrained
    rows = (out / "results.csv").read_text().splitlines()
    assert len(rows) == 1 + len(retrained) and "clean_acc" in rows[0]
    md = (out / "results.md").read_text()
    assert "| Model | Size | clean | pgd2@0.1 |" in md and "32 test images per model (±8.8 points" in md
    assert "(best adv)" in md and "LegoNet" in md
    trial_dirs = [p.parent for p in Path(out, "nni", pipeline["retrain_id"]).rglob("result.json")]
    assert len(trial_dirs) == len(retrained)
    for d in trial_dirs:
        result = json.loads((d / "result.json").read_text())
        arch = load_architecture(d / "architecture.json")
        assert result["architecture"] == arch.key and arch.key in retrained
        weights = torch.load(d / "weights.pt", weights_only=True)
        assert all(torch.isfinite(w).all() for w in weights.values() if w.is_floating_point()), d
        model = build_subnet(arch)
        model.load_state_dict(weights)
        scripted = torch.jit.load(str(d / "model.ts"))
        x = torch.rand(2, 1, 32, 32)
        torch.testing.assert_close(scripted(x), model.eval()(x))
        assert "seed: 0" in (d / "config.resolved.yml").read_text()
