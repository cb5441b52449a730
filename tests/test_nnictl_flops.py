"""A four-objective search (adv_acc, clean_acc, params, flops) repaired into a FLOPs range, under real nnictl."""

from __future__ import annotations

import json

import pytest

from search_space.files import load_front
from search_space.flops import count_flops
from search_space.space import SpaceConfig
from strategies.class_args import table_flops_fn
from strategies.config import NSGA2Config
from strategies.objectives import objective_matrix, parse_objectives
from strategies.operators import dominates_matrix
from strategies.runner import run_search
from strategies.toy import toy_objectives
from tests.test_nnictl_search import _config, _create, _free_port, _get, _nnictl, _wait

pytestmark = pytest.mark.slow

SPACE = SpaceConfig.for_dataset("fashion_mnist", 1)  # the toy trial's default --dataset/--width
FOUR = ["adv_acc:max", "clean_acc:max", "params:min", "flops:min"]
FLOPS_RANGE = [3.0e7, 6.0e7]
ARGS = {"population_size": 8, "offspring_size": 8, "generations": 3, "tournament_size": 3, "seed": 7,
        "objectives": FOUR, "flops_range": FLOPS_RANGE, "dataset": "fashion_mnist", "width_multiplier": 1}
BUDGET = 8 + 3 * 8


def _expected_front() -> dict[str, dict[str, float]]:
    def evaluate(arch):
        return {**toy_objectives(arch), "flops": float(count_flops(arch, SPACE))}

    config = NSGA2Config.from_dict({k: v for k, v in ARGS.items() if k not in ("dataset", "width_multiplier")})
    s = run_search(config, evaluate, flops_fn=table_flops_fn(SPACE))
    return {k: s.results[k] for k in s.front_keys()}


def test_nnictl_four_objective_search_with_a_flops_range(tmp_path):
    port = _free_port()
    exp_id = _create(_config(tmp_path, BUDGET, concurrency=4, args=ARGS), port)
    try:
        _wait(lambda: _get(port, "check-status")["status"] in ("DONE", "ERROR"), 240, "experiment DONE")
        assert _get(port, "check-status")["status"] == "DONE"
        exp_dir = tmp_path / "nni" / exp_id
        archs, objectives, space = load_front(exp_dir / "front.json")
        assert [f"{o.name}:{o.direction}" for o in objectives] == FOUR and space == SPACE
        got = {a.key: a.objectives for a in archs}
        assert got == _expected_front()  # the tuner under nnictl proposes what the in-process search does
        for a in archs:  # the trial's flops are the table's, inside the range the tuner repaired into
            assert a.objectives["flops"] == count_flops(a, SPACE)
            assert FLOPS_RANGE[0] <= a.objectives["flops"] <= FLOPS_RANGE[1]
        F = objective_matrix([a.objectives for a in archs], parse_objectives(FOUR))
        assert F.shape == (len(archs), 4) and not dominates_matrix(F).any()
        state = json.loads((exp_dir / "checkpoint" / "nsga2_state.json").read_text())
        assert state["config"]["flops_range"] == FLOPS_RANGE
        assert all(h["hypervolume"] > 0 for h in state["history"])
        print("four-objective front (nnictl):")
        for a in sorted(archs, key=lambda a: -a.objectives["adv_acc"]):
            o = a.objectives
            print(f"  {a.key}  adv {o['adv_acc']:.4f}  clean {o['clean_acc']:.4f}  params {o['params']:,.0f}  "
                  f"flops {o['flops']:,.0f}")
        print("hypervolume per generation:", [round(h["hypervolume"], 5) for h in state["history"]])
    finally:
        _nnictl("stop", exp_id)
