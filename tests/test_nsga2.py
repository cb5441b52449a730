"""NSGA-II core: sorting, crowding and hypervolume against pymoo; operators; the search."""

from __future__ import annotations

import json

import numpy as np
import pytest
from pymoo.indicators.hv import HV
from pymoo.operators.survival.rank_and_crowding.metrics import get_crowding_function
from pymoo.util.nds.non_dominated_sorting import NonDominatedSorting

from search_space.encoding import STRIDE2_LAYERS, Architecture, Objective, load_front
from strategies.config import NSGA2Config
from strategies.hypervolume import hypervolume, hypervolume_of, normalize
from strategies.nsga2 import NSGA2Search
from strategies.operators import (
    DEFAULT_SPACE,
    ParetoArchive,
    crossover,
    crowding_distance,
    fast_non_dominated_sort,
    mutate,
    random_genome,
    repair_param_range,
    repair_stride2,
    survival_select,
    tournament_select,
)
from strategies.runner import TrialFailed, run_search
from strategies.toy import toy_objectives


def _random_sets(seed: int):
    rng = np.random.default_rng(seed)
    for n, m in [(1, 2), (2, 3), (5, 2), (30, 2), (40, 3), (60, 4)]:
        F = rng.integers(0, 6, (n, m)).astype(float)  # small integers: many ties and duplicates
        yield F
        yield rng.random((n, m))
        G = rng.random((n, m))
        if n > 3:
            G[1] = G[0]
            G[2] = G[0]  # exact duplicates
        yield G


@pytest.mark.parametrize("seed", range(5))
def test_non_dominated_sort_equals_pymoo(seed):
    for F in _random_sets(seed):
        ours = [sorted(f.tolist()) for f in fast_non_dominated_sort(F)]
        theirs = [sorted(np.asarray(f).tolist()) for f in NonDominatedSorting().do(F)]
        assert ours == theirs


@pytest.mark.parametrize("seed", range(5))
def test_pareto_archive_is_the_first_front_in_any_order(seed):
    rng = np.random.default_rng(100 + seed)
    for F in _random_sets(seed):
        first = sorted(fast_non_dominated_sort(F)[0].tolist())
        for _ in range(3):
            archive = ParetoArchive(F.shape[1])
            for i in rng.permutation(len(F)):
                archive.add(int(i), F[i])
            assert sorted(archive.keys) == first
            np.testing.assert_array_equal(archive.F, F[archive.keys])


def test_the_archive_front_survives_a_saved_state():
    s = run_search(_small(), toy_objectives)
    restored = NSGA2Search.from_state(json.loads(json.dumps(s.to_state())))
    assert restored.front_keys() == s.front_keys() and restored.hypervolume() == s.hypervolume()
    keys = sorted(s.results, key=lambda k: (s.born[k], k))  # the full sort the archive replaces
    assert s.front_keys() == [keys[i] for i in fast_non_dominated_sort(s._F(keys))[0]]


@pytest.mark.parametrize("seed", range(5))
def test_crowding_distance_equals_pymoo(seed):
    cd = get_crowding_function("cd")
    for F in _random_sets(seed):
        for front in fast_non_dominated_sort(F):
            np.testing.assert_allclose(crowding_distance(F[front]), cd.do(F[front]), rtol=1e-12)


def test_crowding_distance_table():
    # Exact table (Deb et al.): boundaries inf; interior = mean normalised cuboid side.
    F = np.array([[0.0, 4.0], [1.0, 2.0], [2.0, 1.0], [4.0, 0.0]])
    np.testing.assert_allclose(crowding_distance(F), [np.inf, (2 / 4 + 3 / 4) / 2, (3 / 4 + 2 / 4) / 2, np.inf])
    assert np.all(np.isinf(crowding_distance(F[:2])))
    # duplicates: one copy is interior with distance 0 on that side
    D = np.array([[0.0, 1.0], [0.5, 0.5], [0.5, 0.5], [1.0, 0.0]])
    d = crowding_distance(D)
    assert np.isinf(d[0]) and np.isinf(d[3]) and np.all(np.isfinite(d[1:3]))


def test_survival_takes_fronts_then_crowding():
    F = np.array([[0, 3], [1, 2], [2, 1], [3, 0], [1.5, 1.5], [5, 5]], dtype=float)
    keep = survival_select(F, 3).tolist()
    assert keep[:2] == [0, 3]  # boundary points (inf) first
    assert set(keep) <= {0, 1, 2, 3, 4} and 5 not in keep
    assert survival_select(F, 6).tolist()[-1] == 5


@pytest.mark.parametrize("seed", range(3))
def test_hypervolume_equals_pymoo_and_exact_2d(seed):
    rng = np.random.default_rng(seed)
    F = rng.random((25, 3))
    assert hypervolume(F) == pytest.approx(HV(ref_point=np.full(3, 1.1))(F), rel=1e-12)
    P = rng.random((12, 2))
    front = P[fast_non_dominated_sort(P)[0]]
    front = front[np.argsort(front[:, 0])]
    exact = sum((nxt - x) * (1.1 - y) for (x, y), nxt in zip(front, list(front[1:, 0]) + [1.1], strict=True))
    assert hypervolume(P) == pytest.approx(exact, rel=1e-12)
    assert hypervolume(np.array([[1.2, 0.0]])) == 0.0 and hypervolume(np.empty((0, 2))) == 0.0


def test_normalisation_is_documented_convention():
    objs = (Objective("adv_acc", "max"), Objective("params", "min"))
    N = normalize([{"adv_acc": 0.75, "params": 5e5}], objs, {"adv_acc": (0, 1), "params": (0, 2.5e6)})
    np.testing.assert_allclose(N, [[0.25, 0.2]])
    assert hypervolume_of([{"adv_acc": 1.0, "params": 0.0}], objs) == pytest.approx(1.1 * 1.1)


def test_operators_respect_encoding():
    rng = np.random.default_rng(0)
    a, b = random_genome(rng), random_genome(rng)
    c1, c2 = crossover(a, b, rng, prob=1.0, unit="layer")
    for i in range(16):  # each layer's block and ratio come from the same parent
        assert (tuple(c1[i]) == tuple(a[i]) and tuple(c2[i]) == tuple(b[i])) or (
            tuple(c1[i]) == tuple(b[i]) and tuple(c2[i]) == tuple(a[i]))
    mixed = 0
    for _ in range(20):
        c1, c2 = crossover(a, b, rng, prob=1.0, unit="gene")
        assert np.all(((c1 == a) & (c2 == b)) | ((c1 == b) & (c2 == a)))  # every gene from one parent
        Architecture.from_genes(c1.tolist())
        mixed += int(np.sum((c1[:, 0] == a[:, 0]) & (c1[:, 1] == b[:, 1]) & (a != b).all(axis=1)))
    assert mixed > 0  # block and ratio of a layer can come from different parents
    p1, p2 = crossover(a, b, rng, prob=0.0)
    assert np.array_equal(p1, a) and np.array_equal(p2, b)

    # per gene: each of the 32 genes changes with probability 0.1, always to a different value
    changed = np.mean([np.mean(mutate(a, rng, 0.1, unit="gene") != a) for _ in range(400)])
    assert 0.08 < changed < 0.12
    # per layer: each of the 16 layers changes with probability 0.1 (block, ratio or both)
    diffs = np.array([mutate(a, rng, 0.1, unit="layer") != a for _ in range(2000)])
    assert 0.09 < np.mean(diffs.any(axis=2)) < 0.11
    both = diffs.all(axis=2).sum() / diffs.any(axis=2).sum()
    assert 0.28 < both < 0.39  # one third of mutated layers change block and ratio
    for unit in ("layer", "gene"):
        for _ in range(50):
            Architecture.from_genes(mutate(random_genome(rng), rng, 0.5, unit=unit).tolist())  # stride-2 rule holds
    bad = a.copy()
    bad[STRIDE2_LAYERS[0], 0] = 19
    fixed = repair_stride2(bad, rng)
    Architecture.from_genes(fixed.tolist())


def test_param_range_repair():
    rng = np.random.default_rng(1)
    pf = lambda arch: toy_objectives(arch)["params"]  # noqa: E731
    for _ in range(20):
        g = repair_param_range(random_genome(rng), pf, (3e5, 4e5), rng)
        assert g is not None and 3e5 <= pf(Architecture.from_genome(g)) <= 4e5
    assert repair_param_range(random_genome(rng), pf, (1.0, 2.0), rng, max_steps=20) is None


def test_tournament_prefers_rank_then_crowding():
    rng = np.random.default_rng(0)
    ranks = np.array([1, 0, 0, 2])
    crowd = np.array([np.inf, 0.5, 1.0, np.inf])
    assert tournament_select(ranks, crowd, 10, rng) == 2
    assert tournament_select(ranks, crowd, 10, rng, exclude=2) == 1


def test_config_validation_messages():
    with pytest.raises(ValueError, match="population_size"):
        NSGA2Config(population_size=0)
    with pytest.raises(ValueError, match="hv_bounds: objective 'latency'"):
        NSGA2Config(objectives=(Objective("latency", "min"), Objective("adv_acc", "max")))
    with pytest.raises(ValueError, match="mutation_prob"):
        NSGA2Config(mutation_prob=2)
    with pytest.raises(ValueError, match="mutation_unit"):
        NSGA2Config(mutation_unit="block")
    with pytest.raises(ValueError, match="duplicate_retries"):
        NSGA2Config(duplicate_retries=-1)


def test_defaults_are_documented():
    cfg = NSGA2Config()
    assert (cfg.population_size, cfg.offspring_size, cfg.generations, cfg.tournament_size) == (50, 50, 20, 10)
    assert (cfg.mutation_prob, cfg.mutation_unit, cfg.crossover_prob, cfg.crossover_unit) == \
        (0.1, "layer", 0.9, "gene")
    assert cfg.duplicate_retries == 10


def _small(seed=3, **kw):
    return NSGA2Config(population_size=12, offspring_size=10, generations=4, tournament_size=3, seed=seed, **kw)


def test_search_no_repeats_and_deterministic(tmp_path):
    s1 = run_search(_small(), toy_objectives, output_dir=tmp_path)
    s2 = run_search(_small(), toy_objectives)
    assert s1.to_state() == s2.to_state()
    assert len(s1.born) == s1.evaluations == 12 + 4 * 10  # no architecture proposed twice
    assert [h["generation"] for h in s1.history] == list(range(5))
    hv = [h["hypervolume"] for h in s1.history]
    assert hv == sorted(hv)  # archive front: never worse
    archs, objectives, space = load_front(tmp_path / "front.json")
    assert [a.key for a in archs] == s1.front_keys()
    assert all(a.objectives == s1.results[a.key] for a in archs)
    assert all("generation" in a.provenance for a in archs)
    assert (tmp_path / "history.csv").read_text().splitlines()[0] == \
        "generation,evaluations,failures,front_size,hypervolume"
    assert run_search(_small(seed=4), toy_objectives).front_keys() != s1.front_keys()


def test_search_beats_random_on_toy():
    cfg = NSGA2Config(population_size=20, offspring_size=20, generations=10, tournament_size=4, seed=0)
    nsga = run_search(cfg, toy_objectives).hypervolume()
    rng = np.random.default_rng(0)
    rand = hypervolume_of([toy_objectives(Architecture.from_genome(random_genome(rng))) for _ in range(220)],
                          cfg.objectives)
    assert nsga > rand


def test_failures_complete_the_generation():
    failing = {"n": 0}

    def evaluate(arch):
        failing["n"] += 1
        if failing["n"] % 4 == 0:
            raise TrialFailed("injected")
        return toy_objectives(arch)

    s = run_search(_small(), evaluate)
    assert s.finished and len(s.failed) == s.evaluations // 4
    assert not set(s.failed) & set(s.results)


def test_param_range_search_and_state_roundtrip():
    pf = lambda arch: toy_objectives(arch)["params"]  # noqa: E731
    s = run_search(_small(param_range=(2e5, 6e5)), toy_objectives, params_fn=pf)
    assert all(2e5 <= v["params"] <= 6e5 for v in s.results.values())
    state = json.loads(json.dumps(s.to_state()))
    assert NSGA2Search.from_state(state, pf).to_state() == s.to_state()


def test_version1_state_keeps_its_operators():
    s = run_search(_small(), toy_objectives)
    state = json.loads(json.dumps(s.to_state()))
    for k in ("crossover_unit", "mutation_unit", "duplicate_retries"):
        del state["config"][k]
    state["version"] = 1  # written before the operator keys existed
    cfg = NSGA2Search.from_state(state).config
    assert (cfg.crossover_unit, cfg.mutation_unit, cfg.duplicate_retries) == ("layer", "gene", 0)
    with pytest.raises(ValueError, match="not an NSGA-II state"):
        NSGA2Search.from_state({**state, "version": 99})


def test_duplicate_children_are_mutated_again(monkeypatch):
    # Copies of 4 parents, rarely mutated, often repeat earlier proposals. With retries
    # such a child is mutated afresh; without, new parents are drawn for it (more tournaments).
    import strategies.nsga2 as nsga2_module

    calls = {"n": 0}
    real = nsga2_module.tournament_select

    def counting(*args, **kwargs):
        calls["n"] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(nsga2_module, "tournament_select", counting)

    def tournaments(retries):
        calls["n"] = 0
        cfg = NSGA2Config(population_size=4, offspring_size=30, generations=8, tournament_size=2,
                          crossover_prob=0.0, mutation_prob=0.05, duplicate_retries=retries, seed=0)
        s = run_search(cfg, toy_objectives)
        assert s.evaluations == len(s.born) == cfg.budget  # generations stay full, nothing repeated
        return calls["n"]

    assert tournaments(10) < 0.8 * tournaments(0)


# --------------------------------------------------------------------------- search over a subset
SUB_BLOCKS = [0, 3, 6, 18]  # 18 is pure robust: not a candidate in the stride-2 layers
SUB_RATIOS = [0.8, 1.0, 1.2]


def _inside(keys, blocks=SUB_BLOCKS, ratios=SUB_RATIOS) -> bool:
    archs = [Architecture.from_key(k) for k in keys]
    return all(set(a.blocks) <= set(blocks) and set(a.ratios) <= set(ratios) for a in archs)


def test_gene_space_of_a_subset():
    cfg = NSGA2Config(blocks=[18, 6, 0, 3], ratios=[1.2, 1, 0.8])  # NNI sends 1.0 as 1; any order
    assert cfg.blocks == (0, 3, 6, 18) and cfg.ratios == (0.8, 1.0, 1.2)
    space = cfg.gene_space
    for i in range(16):
        assert space.blocks[i].tolist() == ([0, 3, 6] if i in STRIDE2_LAYERS else SUB_BLOCKS)
    assert space.ratios.tolist() == [3, 4, 5]
    assert NSGA2Config.from_dict(json.loads(json.dumps(cfg.to_dict()))) == cfg
    assert NSGA2Config().gene_space is DEFAULT_SPACE and NSGA2Config().to_dict()["blocks"] is None
    with pytest.raises(ValueError):  # read-only: a frozen space cannot be changed by accident
        space.blocks[1][0] = 5


@pytest.mark.parametrize("units", [("gene", "layer"), ("layer", "gene")])
def test_subset_search_proposes_only_candidates(units):
    cfg = NSGA2Config(population_size=12, offspring_size=10, generations=3, tournament_size=3, seed=5,
                      crossover_unit=units[0], mutation_unit=units[1], blocks=SUB_BLOCKS, ratios=SUB_RATIOS)
    s = run_search(cfg, toy_objectives)
    assert s.evaluations == len(s.born) == cfg.budget  # every generation full: the operators are not stuck
    assert _inside(s.born)
    assert all(Architecture.from_key(k).blocks[i] != 18 for k in s.born for i in STRIDE2_LAYERS)
    archs = [Architecture.from_key(k) for k in s.born]
    used = {(b, r) for a in archs for b, r in zip(a.blocks, a.ratios, strict=True)}
    assert {b for b, _ in used} == set(SUB_BLOCKS) and {r for _, r in used} == set(SUB_RATIOS)
    assert run_search(cfg, toy_objectives).to_state() == s.to_state()  # seeded


def test_subset_operators_stay_inside_and_still_change_genes():
    space = NSGA2Config(blocks=SUB_BLOCKS, ratios=SUB_RATIOS).gene_space
    rng = np.random.default_rng(0)
    changed = 0
    for _ in range(200):
        g = random_genome(rng, space)
        assert space.contains(g)
        for unit in ("gene", "layer"):
            m = mutate(g, rng, 0.3, unit=unit, space=space)
            assert space.contains(m)
            changed += int(np.sum(m != g))
    # a mutated gene always takes another candidate, so genes change at the set rate
    rate = np.mean([np.mean(mutate(g, rng, 0.1, unit="gene", space=space) != g) for _ in range(400)])
    assert changed > 0 and 0.08 < rate < 0.12
    bad = g.copy()
    bad[STRIDE2_LAYERS[1], 0] = 18  # allowed by the subset, but not in a stride-2 layer
    bad[STRIDE2_LAYERS[2], 0] = 12  # allowed at stride 2, but not in the subset
    fixed = repair_stride2(bad, rng, space)
    assert space.contains(fixed)


def test_subset_param_range_repair_moves_within_the_candidate_ratios():
    space = NSGA2Config(blocks=SUB_BLOCKS, ratios=SUB_RATIOS).gene_space
    rng = np.random.default_rng(2)
    pf = lambda arch: toy_objectives(arch)["params"]  # noqa: E731
    for _ in range(20):
        g = repair_param_range(random_genome(rng, space), pf, (4.2e5, 4.6e5), rng, space=space)
        assert g is not None and space.contains(g) and 4.2e5 <= pf(Architecture.from_genome(g)) <= 4.6e5
    big = np.array([[0, 5]] * 16)  # all at 1.2: shrinking takes 1.0, then 0.8, never 0.6
    g = repair_param_range(big, pf, (0.0, 1.0), rng, max_steps=40, space=space)
    assert g is None
    g = repair_param_range(big, pf, (0.0, pf(Architecture.from_genome(big)) - 1), rng, space=space)
    assert g is not None and set(g[:, 1].tolist()) <= {4, 5} and (g[:, 1] == 4).sum() == 1
    s = run_search(_small(param_range=(4.2e5, 4.6e5), blocks=SUB_BLOCKS, ratios=SUB_RATIOS), toy_objectives,
                   params_fn=pf)
    assert _inside(s.born) and all(4.2e5 <= v["params"] <= 4.6e5 for v in s.results.values())


def test_single_candidate_layers_are_left_unchanged_by_mutation():
    cfg = NSGA2Config(population_size=6, offspring_size=6, generations=3, tournament_size=2, seed=0,
                      blocks=[0, 18], ratios=[1.0])
    space = cfg.gene_space
    assert all(space.blocks[i].tolist() == [0] for i in STRIDE2_LAYERS)
    rng = np.random.default_rng(0)
    g = random_genome(rng, space)
    for unit in ("gene", "layer"):
        m = mutate(g, rng, 1.0, unit=unit, space=space)
        assert np.all(m[:, 1] == 4) and np.all(m[list(STRIDE2_LAYERS), 0] == 0)  # single candidates
        others = [i for i in range(16) if i not in STRIDE2_LAYERS]
        if unit == "gene":  # every block gene mutated: each flips to the other candidate
            assert np.all(m[others, 0] == 18 - g[others, 0])
    s = run_search(cfg, toy_objectives)
    assert s.finished and _inside(s.born, [0, 18], [1.0]) and len(s.born) == cfg.budget


@pytest.mark.parametrize("kw, match", [
    ({"blocks": [18, 19]}, r"blocks: \[18, 19\] leaves no candidate for stride-2 layer 0 \(pure robust"),
    ({"blocks": []}, "blocks: empty list"),
    ({"blocks": [0, 3, 3]}, r"blocks: duplicate value\(s\) \[3\]"),
    ({"blocks": [0, 22]}, "blocks: 22 .* not a block id 0..21"),
    ({"blocks": [0, 1.5]}, "blocks: 1.5"),
    ({"blocks": [True]}, "blocks: True"),
    ({"blocks": "0,3"}, "blocks: expected a list"),
    ({"ratios": [0.8, 0.9]}, r"ratios: 0.9 in \[0.8, 0.9\] is not one of"),
    ({"ratios": []}, "ratios: empty list"),
    ({"ratios": [1, 1.0]}, r"ratios: duplicate value\(s\) \[1.0\]"),
    ({"ratios": ["1.0"]}, "ratios: '1.0'"),
    ({"ratios": 1.0}, "ratios: expected a list"),
])
def test_invalid_subsets_are_clear_errors(kw, match):
    with pytest.raises(ValueError, match=match) as e:
        NSGA2Config(**kw)
    assert "\n" not in str(e.value)


def test_subset_is_saved_with_the_state():
    s = run_search(_small(blocks=SUB_BLOCKS, ratios=SUB_RATIOS), toy_objectives)
    state = json.loads(json.dumps(s.to_state()))
    assert state["config"]["blocks"] == SUB_BLOCKS and state["config"]["ratios"] == SUB_RATIOS
    assert NSGA2Search.from_state(state).to_state() == s.to_state()
    old = json.loads(json.dumps(run_search(_small(), toy_objectives).to_state()))
    del old["config"]["blocks"], old["config"]["ratios"]  # a state written before the subset keys
    assert NSGA2Search.from_state(old).config == _small()


def test_constraints_nothing_satisfies_are_an_error_not_a_hang():
    # a params_fn the repair can never satisfy: generation 0 would wait for results forever
    with pytest.raises(ValueError, match="no architecture of the gene space satisfies"):
        NSGA2Search(NSGA2Config(population_size=2, param_range=(10, 20), seed=0), lambda a: 1e6)
