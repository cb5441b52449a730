"""Search-quality benchmark on a table of real evaluations: the table generator and the table mode."""

from __future__ import annotations

import json

import numpy as np
import pytest

from benchmarks import bench_search_quality as bsq
from benchmarks import real_evals
from search_space.architecture import Architecture
from search_space.params import count_params
from search_space.space import RATIOS, SpaceConfig
from strategies.operators import GeneSpace, random_genome

BLOCKS = (0, 3, 6, 18)
SUBSET_RATIOS = (0.8, 1.0, 1.2)
SPACE = GeneSpace.build(BLOCKS, SUBSET_RATIOS)
FMNIST = SpaceConfig.for_dataset("fashion_mnist", 1)


# --------------------------------------------------------------------------- generator
def _fake_meta() -> dict:
    phase = {"epochs": 1, "param_range": [0, 1e9], "sample_ratios": False, "ratio": 1.0, "initial_ratios": None}
    joint = {**phase, "sample_ratios": True, "initial_ratios": list(SUBSET_RATIOS)}
    return {"config": {"sampler": {"blocks": list(BLOCKS), "phases": [phase, joint]},
                       "adversarial": {"epsilon": 0.1}, "data": {"val_size": 5000, "split_seed": 0}},
            "epoch": 3, "global_step": 99}


@pytest.fixture
def fake_trainers(monkeypatch, tmp_path):
    """Cheap stand-ins for load_supernet and evaluate_inherited; ``calls`` lists evaluated keys."""
    ckpt = tmp_path / "last.ckpt"
    ckpt.write_bytes(b"not really a checkpoint")
    state = {"calls": [], "fail_at": None}

    def load_supernet(path):
        return object(), FMNIST, _fake_meta()

    def evaluate_inherited(arch, supernet, space, meta, **kw):
        if state["fail_at"] is not None and len(state["calls"]) == state["fail_at"]:
            raise KeyboardInterrupt  # the user stops the run mid-table
        state["calls"].append(arch.key)
        assert kw["device"] == "cpu" and kw["eval_examples"] == 100 and kw["steps"] == 5
        h = sum(b * (r + 1) for b, r in arch.genes)
        return {"clean_acc": 0.5 + (h % 97) / 200, "adv_acc": 0.2 + (h % 89) / 300,
                "params": count_params(arch, space), "flops": 1000 + h}

    monkeypatch.setattr(real_evals, "load_supernet", load_supernet)
    monkeypatch.setattr(real_evals, "evaluate_inherited", evaluate_inherited)
    return ckpt, state


def _lines(path):
    return path.read_text().split("\n")


def test_generator_is_resumable_and_writes_whole_rows(fake_trainers, tmp_path):
    ckpt, state = fake_trainers
    out = tmp_path / "data" / "evals.csv"
    state["fail_at"] = 3
    with pytest.raises(KeyboardInterrupt):
        real_evals.generate(ckpt, 8, out, progress=False)
    text = out.read_text()
    assert text.endswith("\n") and text.count("\n") == 4  # header + 3 whole rows
    assert [r["arch"] for r in real_evals.read_table(out)] == state["calls"]
    side = json.loads(real_evals.sidecar_path(out).read_text())
    assert side["rows"] == 3 and side["blocks"] == list(BLOCKS) and side["ratios"] == list(SUBSET_RATIOS)

    # Resume: only the missing architectures are evaluated; the draw order is the same.
    state["fail_at"] = None
    side = real_evals.generate(ckpt, 8, out, progress=False)
    rows = real_evals.read_table(out)
    keys = [r["arch"] for r in rows]
    assert len(state["calls"]) == 8 and keys == state["calls"] and len(set(keys)) == 8
    assert keys == real_evals.draw_keys(SPACE, 8, 0)
    # Not the stream of random search / our first generation for seed 0.
    assert Architecture.key_of(random_genome(np.random.default_rng(0), SPACE)) not in keys
    assert all(SPACE.contains(Architecture.from_key(k).genome) for k in keys)
    assert side["rows"] == 8 and side["seconds_per_architecture"] is not None
    assert side["checkpoint_epoch"] == 3 and side["config"]["sampler"]["blocks"] == list(BLOCKS)
    for line in _lines(out)[1:-1]:
        assert len(line.split(",")) == 5
    assert rows[0]["params"] == count_params(Architecture.from_key(keys[0]), FMNIST)

    # Nothing left to do: no evaluation.
    real_evals.generate(ckpt, 8, out, progress=False)
    assert len(state["calls"]) == 8

    # A torn last line (a crash inside a write) is dropped and that architecture re-evaluated.
    with open(out, "a") as f:
        f.write(real_evals.draw_keys(SPACE, 9, 0)[8] + ",0.5")
    assert len(real_evals.read_table(out)) == 8
    real_evals.generate(ckpt, 9, out, progress=False)
    assert out.read_text().count("\n") == 10 and len(state["calls"]) == 9
    assert [r["arch"] for r in real_evals.read_table(out)] == real_evals.draw_keys(SPACE, 9, 0)


def test_generator_refuses_other_settings(fake_trainers, tmp_path):
    ckpt, state = fake_trainers
    out = tmp_path / "evals.csv"
    real_evals.generate(ckpt, 2, out, progress=False)
    with pytest.raises(real_evals.TableError, match="bn_batches"):
        real_evals.generate(ckpt, 3, out, bn_batches=8, progress=False)
    real_evals.sidecar_path(out).unlink()
    with pytest.raises(real_evals.TableError, match="no sidecar"):
        real_evals.generate(ckpt, 3, out, progress=False)
    assert len(state["calls"]) == 2


def test_trained_subset_reads_the_config():
    assert real_evals.trained_subset(_fake_meta()["config"]) == (BLOCKS, SUBSET_RATIOS)
    cfg = {"sampler": {"blocks": None, "phases": [{"sample_ratios": True, "initial_ratios": None}]}}
    assert real_evals.trained_subset(cfg) == (None, RATIOS)
    cfg = {"sampler": {"blocks": [3, 0], "phases": [{"sample_ratios": False, "ratio": 1.0}]}}
    assert real_evals.trained_subset(cfg) == ((0, 3), (1.0,))


# --------------------------------------------------------------------------- surrogate and table mode
def _truth(seed: int = 1):
    """An additive ground truth over SPACE: per-layer block and ratio effects."""
    rng = np.random.default_rng(seed)
    return rng.normal(0, 0.02, (16, 22)), rng.normal(0, 0.02, (16, 10))


def _additive(genomes, truth, base):
    wb, wr = truth
    idx = np.arange(16)
    return np.array([base + wb[idx, g[:, 0]].sum() + wr[idx, g[:, 1]].sum() for g in genomes])


def _genomes(n: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    keys: dict[str, np.ndarray] = {}
    while len(keys) < n:
        g = random_genome(rng, SPACE)
        keys.setdefault(Architecture.key_of(g), g)
    return np.stack(list(keys.values()))


def test_surrogate_recovers_an_additive_truth():
    truth = _truth()
    G = _genomes(300, 0)
    y = _additive(G, truth, 0.6)
    model = bsq.AdditiveSurrogate(SPACE, alpha=1e-3).fit(G, y)
    G_new = _genomes(200, 7)
    pred = model.predict(G_new)
    assert bsq.r2_score(_additive(G_new, truth, 0.6), pred) > 0.999
    assert model.predict_one(G_new[0]) == pytest.approx(pred[0])
    assert bsq.cross_val_r2(G, y, SPACE, alpha=1e-3) > 0.999
    with pytest.raises(ValueError, match="not a candidate"):
        model.predict(random_genome(np.random.default_rng(0)))  # outside the subset (almost surely)


def _write_table(path, n=150, noise=0.01, sidecar=True, seed=3):
    """A synthetic table: additive truth plus noise, exact params; returns the genomes and accuracies.

    Its genomes are the first ``n`` distinct draws of ``default_rng(seed)`` -- random search's
    own draws for that seed."""
    G = _genomes(n, seed)
    rng = np.random.default_rng(5)
    clean = _additive(G, _truth(1), 0.8) + rng.normal(0, noise, n)
    adv = _additive(G, _truth(2), 0.4) + rng.normal(0, noise, n)
    lines = [",".join(real_evals.FIELDS)]
    for g, c, a in zip(G, clean, adv, strict=True):
        arch = Architecture.from_genome(g)
        lines.append(f"{arch.key},{float(c)!r},{float(a)!r},{count_params(arch, FMNIST)},123")
    path.write_text("\n".join(lines) + "\n")
    if sidecar:
        real_evals.sidecar_path(path).write_text(json.dumps(
            {"blocks": list(BLOCKS), "ratios": list(SUBSET_RATIOS), "space": FMNIST.to_dict()}))
    return G, clean, adv


def test_table_mode_every_method_searches_the_subset_with_the_budget(tmp_path):
    path = tmp_path / "evals.csv"
    G, clean, adv = _write_table(path, seed=0)
    table = bsq.load_table(path)
    assert table.subset_from == "sidecar" and table.blocks == BLOCKS and table.ratios == SUBSET_RATIOS
    problem, info = bsq.table_problem(table)
    assert info["cv_r2"]["clean_acc"] > 0.5 and info["cv_r2"]["adv_acc"] > 0.5
    budget = 200
    for name, method in bsq.METHODS.items():
        evals = method(0, budget, problem)
        assert len(evals) == budget, name
        for v in evals:
            assert SPACE.contains(Architecture.from_key(v["key"]).genome), (name, v["key"])
            assert v["params"] == count_params(Architecture.from_key(v["key"]), FMNIST)
        if name == "random search":  # the table holds its first 150 draws: their real numbers are used
            assert [v["key"] for v in evals[:150]] == [Architecture.key_of(g) for g in G]
            assert all(v["from_table"] for v in evals[:150]) and not any(v["from_table"] for v in evals[150:])
            assert [v["clean_acc"] for v in evals[:150]] == list(clean)
            assert [v["adv_acc"] for v in evals[:150]] == list(adv)
    # The subset without a sidecar: what the table holds (here the same).
    real_evals.sidecar_path(path).unlink()
    inferred = bsq.load_table(path)
    assert inferred.subset_from == "table" and inferred.blocks == BLOCKS and inferred.ratios == SUBSET_RATIOS


def test_table_numbers_are_used_for_architectures_in_the_table(tmp_path):
    path = tmp_path / "evals.csv"
    G, clean, adv = _write_table(path, noise=0.05)
    problem, _ = bsq.table_problem(bsq.load_table(path))
    for i in range(len(G)):
        v = problem.evaluate(Architecture.from_genome(G[i]))
        assert v["from_table"] and v["clean_acc"] == clean[i] and v["adv_acc"] == adv[i]
    other = _genomes(len(G) + 5, 11)
    fresh = next(g for g in other if Architecture.key_of(g) not in {Architecture.key_of(x) for x in G})
    v = problem.evaluate(Architecture.from_genome(fresh))
    model = bsq.AdditiveSurrogate(SPACE, 0.1).fit(G, clean)
    assert not v["from_table"] and v["clean_acc"] == pytest.approx(model.predict_one(fresh))
    with pytest.raises(ValueError, match="outside"):
        problem.evaluate(Architecture.from_genome(random_genome(np.random.default_rng(0))))


def test_table_rejects_rows_of_another_space(tmp_path):
    path = tmp_path / "evals.csv"
    _write_table(path, n=20, sidecar=False)
    text = path.read_text().splitlines()
    parts = text[1].split(",")
    parts[3] = str(int(parts[3]) + 1)
    path.write_text("\n".join([text[0], ",".join(parts), *text[2:]]) + "\n")
    with pytest.raises(ValueError, match="parameter counts differ"):
        bsq.load_table(path)


def test_cli_table_mode(tmp_path, capsys):
    path = tmp_path / "evals.csv"
    _write_table(path, n=80)
    assert bsq.main(["--table", str(path), "--seeds", "1", "--budget", "100",
                     "--methods", bsq.OURS, "random search"]) == 0
    out = capsys.readouterr().out
    assert "5-fold CV R^2 clean_acc" in out and "ours - random search" in out and "table" in out
    assert bsq.main(["--table", str(path), "--seeds", "1", "--budget", "100", "--methods", "random search",
                     "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["table"]["rows"] == 80 and set(report["table"]["cv_r2"]) == {"clean_acc", "adv_acc"}
    assert 0.0 <= report["methods"]["random search"]["table_share"] <= 1.0
