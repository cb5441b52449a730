"""Writes the small hand-made result set that ``tests/test_report.py`` reads.

Run from the repo root: ``.venv/bin/python -m tests.data.report.make_data``.

``search/``: a finished search as the NNI tuner leaves it (front.json, history.csv,
checkpoint/nsga2_state.json) with 8 evaluated architectures, mostly two uniform halves
(layers 0-7 and 8-15), each half a (block id, ratio):

====  ==============================  =======  =========  ======  ==============================
name  layers 0-7 / 8-15               adv_acc  clean_acc  params  non-domination rank
====  ==============================  =======  =========  ======  ==============================
A     (15, 1.8) / (0, 0.2)            0.40     0.70       1.80M   0 (front)
B     (15, 1.8) / (1, 0.4)            0.38     0.75       1.70M   0
C     as B, but layer 0 ratio 1.6     0.35     0.78       1.60M   0
D     (3, 2.0) / (1, 0.2)             0.30     0.80       1.50M   0
E     (3, 2.0) / (0, 0.2)             0.29     0.69       1.90M   1 (dominated by A-D)
F-H   blocks 5 / 6 / 7 everywhere     worse                       2, 3, 4
====  ==============================  =======  =========  ======  ==============================

So the top 5 are A-E and their LegoNet is (15, 1.8) x 8 + (1, 0.2) x 8 (layer 0 ties ratio
1.8 with 2.0: the lower id wins). ``retrain_scratch/`` retrains A (two seeds), B, C and that
LegoNet from scratch; ``retrain_finetune/`` fine-tunes A, B, C; PGD grid 2 x 2
(steps 10, 20 x epsilon 0.05, 0.1). The expected numbers are spelled out in ``tests/test_report.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

from search_space.encoding import Architecture, SpaceConfig, front_to_dict
from strategies.config import NSGA2Config

HERE = Path(__file__).parent
SPACE = SpaceConfig.for_dataset("fashion_mnist")


def halves(first: tuple[int, int], second: tuple[int, int], layer0_ratio: int | None = None) -> Architecture:
    genes = [first] * 8 + [second] * 8
    if layer0_ratio is not None:
        genes[0] = (first[0], layer0_ratio)
    return Architecture.from_genes(genes)


ARCHS = {
    "A": (halves((15, 8), (0, 0)), {"adv_acc": 0.40, "clean_acc": 0.70, "params": 1.80e6}),
    "B": (halves((15, 8), (1, 1)), {"adv_acc": 0.38, "clean_acc": 0.75, "params": 1.70e6}),
    "C": (halves((15, 8), (1, 1), layer0_ratio=7), {"adv_acc": 0.35, "clean_acc": 0.78, "params": 1.60e6}),
    "D": (halves((3, 9), (1, 0)), {"adv_acc": 0.30, "clean_acc": 0.80, "params": 1.50e6}),
    "E": (halves((3, 9), (0, 0)), {"adv_acc": 0.29, "clean_acc": 0.69, "params": 1.90e6}),
    "F": (halves((5, 5), (5, 5)), {"adv_acc": 0.20, "clean_acc": 0.60, "params": 2.00e6}),
    "G": (halves((6, 4), (6, 4)), {"adv_acc": 0.15, "clean_acc": 0.55, "params": 2.10e6}),
    "H": (halves((7, 3), (7, 3)), {"adv_acc": 0.10, "clean_acc": 0.50, "params": 2.20e6}),
}
FRONT = ("A", "B", "C", "D")
GRID = ((10, 0.05), (10, 0.1), (20, 0.05), (20, 0.1))


def write_search(out: Path) -> None:
    config = NSGA2Config(population_size=4, offspring_size=4, generations=1, tournament_size=2, seed=0)
    born = {a.key: (0 if n in "ABEF" else 1) for n, (a, _) in ARCHS.items()}
    state = {"format": "tamnas-nsga2-state", "version": 2, "config": config.to_dict(), "generation": 1,
             "finished": True, "proposals": [], "population": [ARCHS[n][0].key for n in "ABCD"],
             "results": {a.key: o for a, o in ARCHS.values()}, "failed": [], "born": born,
             "provenance": {a.key: {"trial_id": f"t{n}"} for n, (a, _) in ARCHS.items()},
             "history": [{"generation": 0, "evaluations": 4, "failures": 0, "front_size": 2, "hypervolume": 0.25},
                         {"generation": 1, "evaluations": 8, "failures": 0, "front_size": 4, "hypervolume": 0.3125}]}
    (out / "checkpoint").mkdir(parents=True, exist_ok=True)
    (out / "checkpoint" / "nsga2_state.json").write_text(json.dumps(state) + "\n")
    front = [Architecture(ARCHS[n][0].blocks, ARCHS[n][0].ratios, ARCHS[n][1], {"trial_id": f"t{n}"})
             for n in FRONT]
    d = front_to_dict(front, space=SPACE, experiment_id="search01")
    (out / "front.json").write_text(json.dumps(d, separators=(",", ":")) + "\n")  # compact: a small fixture
    (out / "history.csv").write_text("generation,evaluations,failures,front_size,hypervolume\n"
                                     "0,4,0,2,0.25\n1,8,0,4,0.3125\n")


def result(key: str, init: str, seed: int, params: int, clean: float, grid: list[float]) -> dict:
    pgd = [{"epsilon": e, "epsilon_label": f"{e:g}", "steps": s, "acc": a} for (s, e), a in zip(GRID, grid, strict=True)]
    return {"architecture": key, "init": init, "seed": seed, "dataset": "fashion_mnist", "width_multiplier": 1,
            "params": params, "clean_acc": clean, "adv_acc": grid[1], "adv_epsilon": 0.1,
            "test": {"num_examples": 100, "params": params, "clean_acc": clean, "pgd": pgd, "autoattack": None}}


def write_retrains(out: Path, lego_key: str) -> None:
    from search_space.params import count_params

    a, b, c = (ARCHS[n][0].key for n in "ABC")
    lego_params = count_params(Architecture.from_key(lego_key), SPACE)
    runs = {
        "retrain_scratch": [
            ("sA0", result(a, "scratch", 0, 1_800_000, 0.80, [0.60, 0.50, 0.58, 0.48])),
            ("sA1", result(a, "scratch", 1, 1_800_000, 0.82, [0.62, 0.52, 0.60, 0.50])),
            ("sB", result(b, "scratch", 0, 1_700_000, 0.84, [0.61, 0.47, 0.59, 0.45])),
            ("sC", result(c, "scratch", 0, 1_600_000, 0.86, [0.55, 0.44, 0.53, 0.42])),
            ("sL", result(lego_key, "scratch", 0, lego_params, 0.85, [0.66, 0.56, 0.64, 0.54])),
        ],
        "retrain_finetune": [
            ("fA", result(a, "finetune", 0, 1_800_000, 0.70, [0.50, 0.40, 0.49, 0.39])),
            ("fB", result(b, "finetune", 0, 1_700_000, 0.74, [0.52, 0.41, 0.50, 0.40])),
            ("fC", result(c, "finetune", 0, 1_600_000, 0.80, [0.50, 0.43, 0.49, 0.41])),
        ],
    }
    for folder, trials in runs.items():
        for trial, r in trials:
            d = out / folder / "trials" / trial
            d.mkdir(parents=True, exist_ok=True)
            (d / "result.json").write_text(json.dumps(r) + "\n")


if __name__ == "__main__":
    from workflow.search import load_search
    from workflow.statistics import search_statistics

    write_search(HERE / "search")
    lego = search_statistics(load_search(HERE / "search"), 5).legonet
    write_retrains(HERE, lego.key)
    print("LegoNet of the top 5:", lego.key)
