"""The report's ranking section: Kendall τ between the search's scores and the retrain's, and its scatter.

On the hand-made result set of tests/data/report (see its make_data.py): the search scored A, B, C
(adv 0.40 > 0.38 > 0.35, clean 0.70 < 0.75 < 0.78); from scratch they reach adv 0.51 (mean of two
seeds) > 0.47 > 0.44 and clean 0.81 < 0.84 < 0.86 (τ = 1 both); fine-tuned adv 0.40 < 0.41 < 0.43
(τ = -1) and clean 0.70 < 0.74 < 0.80 (τ = 1). The LegoNet was never scored by the search: left out.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from workflow.report import kendall_tau, write_report
from workflow.results import load_retrain
from workflow.search import load_search

DATA = Path(__file__).parent / "data" / "report"


def test_kendall_tau_and_its_notes():
    tau, p, note = kendall_tau([0.1, 0.2, 0.3, 0.4], [0.5, 0.7, 0.6, 0.9])
    assert tau == pytest.approx(4 / 6) and 0 < p <= 1 and note == ""  # 5 concordant, 1 discordant pair
    assert kendall_tau([0.1, 0.2], [0.2, 0.1])[0] == pytest.approx(-1.0)
    assert "n < 3" in kendall_tau([0.1, 0.2], [0.2, 0.1])[2]
    assert kendall_tau([0.3], [0.2]) == (None, None, "n = 1: τ undefined")
    assert kendall_tau([0.3, 0.3, 0.3], [0.1, 0.2, 0.3])[0] is None


@pytest.fixture(scope="module")
def ranking_report(tmp_path_factory):
    out = tmp_path_factory.mktemp("ranking")
    retrains = load_retrain(str(DATA / "retrain_scratch")) + load_retrain(str(DATA / "retrain_finetune"))
    return write_report(load_search(DATA / "search"), retrains, out, top_k_count=5)


def test_report_gives_kendall_tau_per_set_and_objective(ranking_report):
    rep = ranking_report
    with open(rep.out / "ranking.csv", newline="") as f:
        rows = {(r["set"].split(" (")[1].rstrip(")"), r["objective"]): r for r in csv.DictReader(f)}
    expected = {("scratch", "adv_acc"): 1.0, ("scratch", "clean_acc"): 1.0,
                ("finetune", "adv_acc"): -1.0, ("finetune", "clean_acc"): 1.0}
    assert set(rows) == set(expected)
    for key, tau in expected.items():
        assert float(rows[key]["kendall_tau"]) == pytest.approx(tau) and rows[key]["n"] == "3"
    summary = json.loads((rep.out / "report.json").read_text())["ranking"]
    assert len(summary) == 4 and {"ranking.csv", "ranking_points.csv", "ranking.png"} <= set(rep.files)
    md = (rep.out / "report.md").read_text()
    assert "Kendall τ" in md and "![search score vs retrain score](ranking.png)" in md
    with open(rep.out / "ranking_points.csv", newline="") as f:
        points = list(csv.DictReader(f))
    assert len(points) == 12 and all(p["label"] != "LegoNet" for p in points)


def test_ranking_figure_plots_search_vs_retrain(ranking_report):
    fig = ranking_report.figures["ranking"]
    assert len(fig.axes) == 2
    by_gid = {c.get_gid(): c.get_offsets() for ax in fig.axes for c in ax.collections if c.get_gid()}
    scratch = next(v for k, v in by_gid.items() if k.startswith("rank:0:") and "scratch" in k)
    np.testing.assert_allclose(sorted(map(tuple, np.asarray(scratch))), [(35, 44), (38, 47), (40, 51)], atol=1e-6)
    assert "τ = 1.00" in fig.axes[0].get_title() and "τ = -1.00" in fig.axes[0].get_title()
