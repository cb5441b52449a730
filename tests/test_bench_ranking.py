"""The ranking benchmark (benchmarks.bench_ranking): choosing, the statistics, and the whole path at K = 3."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks import bench_ranking as br
from search_space.params import count_params
from search_space.space import SpaceConfig
from strategies.operators import GeneSpace

REPO = Path(__file__).resolve().parents[1]
QUICK = REPO / "configs" / "supernet" / "fashion_mnist_quick.yml"
FMNIST = SpaceConfig.for_dataset("fashion_mnist", 1)


def test_architectures_are_stratified_by_parameters():
    gene_space = GeneSpace.build((0, 6), (0.8, 1.0, 1.2))
    archs = br.choose_architectures(gene_space, FMNIST, 10, seed=0)
    params = [count_params(a, FMNIST) for a in archs]
    assert len({a.key for a in archs}) == 10 and params == sorted(params)
    assert all(b in (0, 6) and r in (0.8, 1.0, 1.2) for a in archs for b, r in zip(a.blocks, a.ratios, strict=True))
    pool = sorted(count_params(a, FMNIST) for a in br.choose_architectures(gene_space, FMNIST, 400, seed=0))
    assert params[0] <= np.percentile(pool, 10) and params[-1] >= np.percentile(pool, 90)  # spread, not clumped
    lo, hi = params[3], params[6]
    inside = [count_params(a, FMNIST) for a in br.choose_architectures(gene_space, FMNIST, 3, param_range=(lo, hi))]
    assert all(lo <= p <= hi for p in inside)
    with pytest.raises(ValueError, match="only"):
        br.choose_architectures(GeneSpace.build((0,), (1.0,)), FMNIST, 2)


def test_mixture_pool_reaches_the_corners_that_uniform_draws_miss():
    gene_space = GeneSpace.build((0, 6), (0.8, 1.0, 1.2))
    mixture = br.mixture_keys(gene_space, 400, seed=0)
    assert mixture == br.mixture_keys(gene_space, 400, seed=0) and len(set(mixture)) == 400  # seeded, distinct
    span = {}
    for spread in br.SPREADS:
        params = [count_params(a, FMNIST) for a in br.choose_architectures(gene_space, FMNIST, 12, spread=spread)]
        span[spread] = params[-1] - params[0]
    assert span["mixture"] > 1.5 * span["uniform"]
    with pytest.raises(ValueError, match="spread 'corners'"):
        br.choose_architectures(gene_space, FMNIST, 3, spread="corners")


def test_rank_statistics_and_bootstrap_intervals():
    x = np.arange(10.0)
    same = br.rank_statistics(x, 2 * x + 1, resamples=200)
    assert same["kendall_tau"] == pytest.approx(1) and same["spearman_rho"] == pytest.approx(1)
    assert same["kendall_tau_ci"] == pytest.approx([1, 1]) and same["bootstrap_valid"] == 200
    rev = br.rank_statistics(x, -x, resamples=200)
    assert rev["kendall_tau"] == pytest.approx(-1) and rev["spearman_rho_ci"] == pytest.approx([-1, -1])
    rng = np.random.default_rng(0)
    noise = br.rank_statistics(x, rng.permutation(10), resamples=500, seed=1)
    lo, hi = noise["kendall_tau_ci"]
    assert lo < noise["kendall_tau"] < hi and hi - lo > 0.3  # a permutation: a wide interval
    one = br.rank_statistics([0.5], [0.4])
    assert one["kendall_tau"] is None and one["kendall_tau_ci"] is None and one["bootstrap_valid"] == 0
    flat = br.rank_statistics([0.5, 0.5, 0.5], [0.1, 0.2, 0.3], resamples=20)
    assert flat["spearman_rho"] is None and flat["bootstrap_valid"] == 0


@pytest.fixture(scope="module")
def tiny_supernet(tmp_path_factory, data_root):
    from trainers.supernet import load_supernet_config, train_supernet

    out = tmp_path_factory.mktemp("ranking_supernet")
    sets = {"data.root": str(data_root), "data.train_subset": 32, "data.val_subset": 16, "data.batch_size": 16,
            "data.eval_batch_size": 16, "data.val_size": 64, "adversarial.m": 1, "adversarial.n": 1,
            "validation.steps": [1], "validation.bn_batches": 1, "validation.max_batches": 1, "sampler.hold": 1,
            "sampler.phases": [{"name": "block", "epochs": 1, "method": "clean", "param_range": [1.3e6, 1.7e6]},
                               {"name": "joint", "epochs": 1, "sample_ratios": True,
                                "initial_ratios": [0.8, 1.0, 1.2], "widen_every": 100000,
                                "param_range": [1.3e6, 1.7e6]}],
            "trainer.progress_bar": False, "trainer.log_every_n_steps": 1}
    cfg = load_supernet_config(QUICK, [f"{k}={json.dumps(v)}" for k, v in sets.items()])
    train_supernet(cfg, out, epochs=2)
    return out / "checkpoints" / "last.ckpt"


@pytest.mark.slow
def test_whole_benchmark_at_k3(tiny_supernet, tmp_path, capsys, data_root):
    argv = ["--checkpoint", str(tiny_supernet), "--k", "3", "--warmup-epochs", "1", "--epochs", "1",
            "--train-images", "32", "--eval-examples", "16", "--steps", "1", "--bn-batches", "1",
            "--batch-size", "16", "--finetune-epochs", "1", "--bootstrap", "50", "--threads", "1",
            "--set", "data.batch_size=16", "--set", "data.eval_batch_size=16", "--set", "data.val_subset=16",
            "--set", "adversarial.m=1", "--set", "adversarial.n=1", "--set", f"data.root={data_root}",
            "--out", str(tmp_path / "bench"), "--json"]
    assert br.main(argv) == 0
    result = json.loads(capsys.readouterr().out)
    assert result == json.loads((tmp_path / "bench" / "ranking.json").read_text())
    rows = result["rows"]
    assert len(rows) == 3 and [r["params"] for r in rows] == sorted(r["params"] for r in rows)
    for r in rows:
        for kind in ("search", "scratch", "finetune"):
            assert 0 <= r[kind]["clean_acc"] <= 1 and 0 <= r[kind]["adv_acc"] <= 1
        assert r["scratch"]["num_examples"] == 16
    assert len((tmp_path / "bench" / "rows.jsonl").read_text().splitlines()) == 3
    stats = result["statistics"]
    assert set(stats) == {"scratch", "finetune"} and set(stats["scratch"]) == {"clean_acc", "adv_acc"}
    for st in (stats[k][a] for k in stats for a in stats[k]):
        assert st["n"] == 3 and st["resamples"] == 50 and st["bootstrap_valid"] <= 50
        assert st["kendall_tau"] is None or -1 <= st["kendall_tau"] <= 1
    assert result["settings"]["blocks"] == [0, 6] and result["settings"]["ratios"] == [0.8, 1.0, 1.2]
    text = br.format_result(result)
    assert "Kendall tau" in text and "scratch" in text and "finetune" in text


def test_bad_flags_are_usage_errors(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        br.main(["--checkpoint", "x", "--k", "1"])
    assert e.value.code == 2 and "--k" in capsys.readouterr().err
    assert br.main(["--checkpoint", str(tmp_path / "missing.ckpt"), "--k", "3"]) == 2
    assert capsys.readouterr().err.startswith("error: ")
