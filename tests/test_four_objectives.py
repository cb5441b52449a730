"""FLOPs as a search objective: flops_range repair, a four-objective search, its hypervolume and plots."""

from __future__ import annotations

import json
import random

import numpy as np
import pytest

from search_space.architecture import Architecture, Objective
from search_space.flops import count_flops, flop_table
from search_space.params import count_params, random_architecture
from search_space.space import SpaceConfig
from strategies.class_args import check_flops_range, parse_class_args, table_flops_fn, table_params_fn
from strategies.config import NSGA2Config
from strategies.hypervolume import hypervolume, hypervolume_of
from strategies.nsga2 import NSGA2Search
from strategies.objectives import objective_matrix, parse_objectives
from strategies.operators import dominates_matrix, random_genome, repair_ranges
from strategies.runner import run_search
from strategies.toy import toy_objectives
from workflow import plots

SPACE = SpaceConfig.for_dataset("fashion_mnist", 1)
FOUR = ["adv_acc:max", "clean_acc:max", "params:min", "flops:min"]
FLOPS_RANGE = (3.0e7, 6.0e7)


def toy_with_flops(arch: Architecture) -> dict[str, float]:
    """What strategies.toy_trial reports: the toy objectives and the space's exact FLOPs."""
    return {**toy_objectives(arch), "flops": float(count_flops(arch, SPACE))}


def _config(**kw) -> NSGA2Config:
    return NSGA2Config(population_size=8, offspring_size=8, generations=3, tournament_size=3, seed=3,
                       objectives=parse_objectives(FOUR), **kw)


def test_flops_range_is_a_config_field_classarg_and_flag():
    cfg = _config(flops_range=(3e7, 6e7))
    assert NSGA2Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert cfg.to_dict()["flops_range"] == [3e7, 6e7] and NSGA2Config().to_dict()["flops_range"] is None
    with pytest.raises(ValueError, match=r"flops_range: expected \[low, high\]"):
        NSGA2Config(flops_range=(5.0, 1.0))
    config, space, _ = parse_class_args({"dataset": "fashion_mnist", "width_multiplier": 1,
                                         "objectives": FOUR, "flops_range": [3e7, 6e7]})
    assert config.flops_range == (3e7, 6e7) and space == SPACE
    lo, hi = flop_table(SPACE).interval()
    with pytest.raises(ValueError, match=rf"flops_range: \[1, 2\] reaches no architecture.*{lo:,}-{hi:,} FLOPs"):
        check_flops_range(NSGA2Config(flops_range=(1, 2)), SPACE)


def test_repair_ranges_meets_params_and_flops_at_once():
    rng = np.random.default_rng(0)
    pf, ff = table_params_fn(SPACE), table_flops_fn(SPACE)
    constraints = [(pf, (1.3e6, 1.6e6)), (ff, FLOPS_RANGE)]
    for _ in range(30):
        g = repair_ranges(random_genome(rng), constraints, rng)
        assert g is not None
        arch = Architecture.from_genome(g)
        assert 1.3e6 <= count_params(arch, SPACE) <= 1.6e6 and FLOPS_RANGE[0] <= count_flops(arch, SPACE) <= 6e7


def test_four_objective_search_repairs_into_the_flops_range_without_building_models():
    ff = table_flops_fn(SPACE)
    with pytest.raises(ValueError, match="flops_range is set but no flops_fn"):
        NSGA2Search(_config(flops_range=FLOPS_RANGE))
    s = run_search(_config(flops_range=FLOPS_RANGE), toy_with_flops, flops_fn=ff)
    assert s.evaluations == 8 + 3 * 8
    assert all(FLOPS_RANGE[0] <= v["flops"] <= FLOPS_RANGE[1] for v in s.results.values())
    front = [s.results[k] for k in s.front_keys()]
    F = objective_matrix(front, s.config.objectives)
    assert F.shape[1] == 4 and not dominates_matrix(F).any()
    assert all(h["hypervolume"] > 0 for h in s.history)
    state = json.loads(json.dumps(s.to_state()))
    assert NSGA2Search.from_state(state, None, ff).to_state() == s.to_state()


def test_strategies_cli_searches_four_objectives_with_a_flops_range(tmp_path, monkeypatch):
    import strategies.__main__ as cli

    monkeypatch.setattr("strategies.toy.toy_objectives", toy_with_flops)
    assert cli.main(["search", "--dataset", "fashion_mnist", "--width", "1", "--population", "6", "--offspring",
                     "6", "--generations", "1", "--tournament", "2", "--seed", "1", "--objectives", *FOUR,
                     "--flops-range", "3e7", "6e7", "--out", str(tmp_path)]) == 0
    front = json.loads((tmp_path / "front.json").read_text())
    assert [o["name"] for o in front["objectives"]] == ["adv_acc", "clean_acc", "params", "flops"]
    assert all(FLOPS_RANGE[0] <= a["objectives"]["flops"] <= FLOPS_RANGE[1] for a in front["architectures"])


def test_hypervolume_in_four_objectives_is_exact():
    # one point: the box to the reference point; two: inclusion-exclusion of two boxes
    a, b = np.array([0.1, 0.2, 0.3, 0.4]), np.array([0.4, 0.1, 0.2, 0.3])
    box = lambda p: float(np.prod(1.1 - p))  # noqa: E731
    assert hypervolume(a[None]) == pytest.approx(box(a))
    assert hypervolume(np.stack([a, b])) == pytest.approx(box(a) + box(b) - box(np.maximum(a, b)))
    objs = parse_objectives(FOUR)
    v = {"adv_acc": 0.5, "clean_acc": 0.8, "params": 1.25e6, "flops": 5e8}  # default bounds: 2.5e6, 1e9
    assert hypervolume_of([v], objs) == pytest.approx((1.1 - 0.5) * (1.1 - 0.2) * (1.1 - 0.5) * (1.1 - 0.5))


def test_pairwise_figure_draws_every_pair_of_a_synthetic_four_objective_front():
    rng = random.Random(0)
    archs = [random_architecture(rng) for _ in range(5)]
    values = [{"adv_acc": 0.3 + 0.02 * i, "clean_acc": 0.8 - 0.03 * i, "params": float(count_params(a, SPACE)),
               "flops": float(count_flops(a, SPACE))} for i, a in enumerate(archs)]
    objectives = [(o.name, o.direction) for o in parse_objectives(FOUR)]
    fig = plots.pairwise_figure(values, objectives, [f"front #{i}" for i in range(5)], ["#000000"] * 5)
    pairs = {c.get_gid(): c for ax in fig.axes for c in ax.collections}
    assert set(pairs) == {f"pair:{objectives[i][0]}:{objectives[j][0]}" for i in range(4) for j in range(i)}
    xy = pairs["pair:flops:params"].get_offsets()
    np.testing.assert_allclose(xy[:, 0], [v["params"] / 1e6 for v in values])
    np.testing.assert_allclose(xy[:, 1], [v["flops"] / 1e6 for v in values])
    np.testing.assert_allclose(pairs["pair:clean_acc:adv_acc"].get_offsets()[:, 1],
                               [100 * v["clean_acc"] for v in values])
    names = [t.get_text() for ax in fig.axes for t in ax.texts if t.get_gid() == "objective"]
    assert names == ["adv_acc\n(max)", "clean_acc\n(max)", "params\n(min)", "flops\n(min)"]


def test_report_adds_the_pairwise_figure_for_four_objectives(tmp_path):
    from workflow.report import write_report
    from workflow.search import SearchRun

    rng = random.Random(1)
    front = []
    for i in range(4):
        a = random_architecture(rng)
        front.append(a.with_info({**toy_objectives(a), "flops": float(count_flops(a, SPACE)),
                                  "adv_acc": 0.3 + 0.01 * i}, {}))
    objectives = [Objective(*o.split(":")) for o in FOUR]
    run = SearchRun(tmp_path / "search", "synthetic", front, objectives, SPACE,
                    [{"generation": 0, "evaluations": 4, "front_size": 4, "hypervolume": 0.5}], front, "front.json")
    rep = write_report(run, [], tmp_path / "report")
    assert "front_pairs" in rep.figures and (tmp_path / "report" / "front_pairs.png").exists()
    assert "front_pairs.png" in (tmp_path / "report" / "report.md").read_text()
