"""The analysis report (workflow.report) on the hand-made result set in tests/data/report.

The set (see tests/data/report/make_data.py): 8 evaluated architectures, front A-D, E the only
rank-1 architecture, so the top 5 are A-E; A-C retrained from scratch (A with two seeds) and
fine-tuned; the LegoNet of the top 5 retrained from scratch. Every expected number below is
computed by hand from the files.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from search_space.encoding import Architecture, load_architecture, load_front
from search_space.legonet import legonet, legonet_from_files, read_stats_csv
from workflow.__main__ import main
from workflow.choice import pick_front
from workflow.compare import retrain_sets, scratch_finetune_pairs, scratch_vs_finetune
from workflow.plots import MAX_MARKER, MIN_MARKER
from workflow.report import write_report
from workflow.results import ReportError, load_retrain
from workflow.search import load_search
from workflow.statistics import search_statistics

DATA = Path(__file__).parent / "data" / "report"
SEARCH, SCRATCH, FINETUNE = DATA / "search", DATA / "retrain_scratch", DATA / "retrain_finetune"


def _halves(first, second, layer0=None):
    genes = [first] * 8 + [second] * 8
    if layer0 is not None:
        genes[0] = (first[0], layer0)
    return Architecture.from_genes(genes).key


A, B, C = _halves((15, 8), (0, 0)), _halves((15, 8), (1, 1)), _halves((15, 8), (1, 1), 7)
D, E = _halves((3, 9), (1, 0)), _halves((3, 9), (0, 0))
LEGO = Architecture.from_genes([(15, 8)] * 8 + [(1, 0)] * 8)  # layer 0's ratio tie 1.8/2.0 -> lower id


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    search = load_search(SEARCH)
    retrains = load_retrain(str(SCRATCH)) + load_retrain(str(FINETUNE))
    return write_report(search, retrains, out, top_k_count=5)


def _rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


# --------------------------------------------------------------------------- statistics and LegoNet
def test_top_k_and_statistics_counts():
    search = load_search(SEARCH)
    assert len(search.evaluated) == 8 and search.evaluated_source.startswith("tuner state")
    assert [a.key for a in search.front] == [A, B, C, D]
    stats = search_statistics(search, 5)
    assert {a.key for a in stats.top} == {A, B, C, D, E} and stats.k == 5
    expected_blocks = [[0] * 22 for _ in range(16)]
    expected_ratios = [[0] * 10 for _ in range(16)]
    for layer in range(8):
        expected_blocks[layer][15], expected_blocks[layer][3] = 3, 2
        expected_ratios[layer][8], expected_ratios[layer][9] = 3, 2
        expected_blocks[layer + 8][1], expected_blocks[layer + 8][0] = 3, 2
        expected_ratios[layer + 8][0], expected_ratios[layer + 8][1] = 3, 2
    expected_ratios[0][8], expected_ratios[0][7] = 2, 1  # C has ratio 1.6 in layer 0
    assert stats.blocks == expected_blocks
    assert stats.ratios == expected_ratios
    assert stats.legonet == LEGO
    # the front alone when k is the front's size; the whole search when k exceeds it
    assert {a.key for a in search_statistics(search, 4).top} == {A, B, C, D}
    assert search_statistics(search, 50).k == 8


def test_statistics_tables_round_trip_into_the_legonet_builder(report, tmp_path):
    out = report.out
    blocks, ratios = read_stats_csv(out / "block_stats.csv", 22), read_stats_csv(out / "ratio_stats.csv", 10)
    stats = search_statistics(load_search(SEARCH), 5)
    assert blocks == stats.blocks and ratios == stats.ratios
    assert legonet(blocks, ratios) == LEGO
    assert legonet_from_files(out / "block_stats.csv", out / "ratio_stats.csv") == LEGO
    assert load_architecture(out / "legonet.json") == LEGO
    # and through the one lego command, from the tables
    assert main(["lego", "--block-stats", str(out / "block_stats.csv"), "--ratio-stats",
                 str(out / "ratio_stats.csv"), "--dataset", "fashion_mnist", "--width", "1",
                 "--out", str(tmp_path)]) == 0
    assert load_architecture(tmp_path / "legonet.json") == LEGO
    top2 = {(r["table"], int(r["layer"])): r for r in _rows(out / "stats_top2.csv")}
    assert (top2["block", 0]["first_id"], top2["block", 0]["first_count"]) == ("15", "3")
    assert (top2["ratio", 0]["first_id"], top2["ratio", 0]["second_id"]) == ("8", "9")  # tie 2-2: lower id first


def test_lego_command_writes_the_retrain_list(tmp_path, capsys):
    assert main(["lego", "--search", str(SEARCH), "--top-k", "5", "--front-top", "2", "--out", str(tmp_path)]) == 0
    assert "LegoNet" in capsys.readouterr().out
    archs, _, space = load_front(tmp_path / "retrain_front.json")
    assert [a.key for a in archs] == [A, B, LEGO.key] and space.dataset == "fashion_mnist"
    assert [a.provenance["label"] for a in archs] == ["front #1", "front #2", "LegoNet"]
    lego = load_architecture(tmp_path / "legonet.json", space)
    assert lego == LEGO and lego.provenance["top_k"] == 5 and lego.objectives["params"] > 0


def test_lego_command_picks_one_front_architecture_per_role(tmp_path, capsys):
    """Default: the best under attack (A), the best clean and the smallest (both D, once), the LegoNet."""
    assert main(["lego", "--search", str(SEARCH), "--top-k", "5", "--out", str(tmp_path)]) == 0
    assert "front #1 (best adv), front #4 (best clean, smallest), LegoNet" in capsys.readouterr().out
    archs, _, _ = load_front(tmp_path / "retrain_front.json")
    assert [a.key for a in archs] == [A, D, LEGO.key]
    assert archs[0].provenance["chosen_as"] == ["best-adv"] and "adv_acc 0.400" in archs[0].provenance["why"]
    assert archs[1].provenance["chosen_as"] == ["best-clean", "smallest"]
    assert main(["lego", "--search", str(SEARCH), "--pick", "smallest", "--out", str(tmp_path)]) == 0
    assert [a.key for a in load_front(tmp_path / "retrain_front.json")[0]] == [D, LEGO.key]


def test_lego_command_without_the_legonet_lists_the_picks_only(tmp_path, capsys):
    """The demo retrains its pick alone: --without-legonet leaves the LegoNet out of the retrain list only."""
    assert main(["lego", "--search", str(SEARCH), "--top-k", "5", "--pick", "best-adv", "--without-legonet",
                 "--out", str(tmp_path)]) == 0
    archs, _, _ = load_front(tmp_path / "retrain_front.json")
    assert [a.key for a in archs] == [A] and archs[0].provenance["label"] == "front #1 (best adv)"
    assert load_architecture(tmp_path / "legonet.json") == LEGO  # still built and written
    assert main(["lego", "--search", str(SEARCH), "--front-top", "0", "--without-legonet",
                 "--out", str(tmp_path / "none")]) == 1  # nothing to retrain: an error, no file
    assert "nothing to retrain" in capsys.readouterr().err
    assert not (tmp_path / "none" / "retrain_front.json").exists()


# --------------------------------------------------------------------------- plots = data
def test_report_files_exist(report):
    for name in ("report.md", "report.json", "front.png", "front_3d.png", "hypervolume.png", "block_stats.png",
                 "ratio_stats.png", "front_points.csv", "hypervolume.csv", "scratch_vs_finetune.csv",
                 "results.csv", "best.csv", "legonet_vs_best.csv", "block_stats.csv", "ratio_stats.csv",
                 "legonet.json", "topk.json", "architectures.csv"):
        assert (report.out / name).stat().st_size > 0, name
        assert name in report.files
    assert (report.out / "front.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (report.out / "report.md").read_text()
    for link in ("](front.png)", "](front_3d.png)", "](hypervolume.png)", "](block_stats.png)", "](ratio_stats.png)"):
        assert link in md
    assert "Table X)" in md and "Table XI)" in md and "| Model | Size | clean | pgd10@0.05 | pgd10@0.1 |" in md
    assert "$" not in md  # plain-text headers, no LaTeX
    assert "100 test images per model (±5.0 points" in md
    # the key legend reads a key right: `15:8` is block 15 with ratio index 8 = 1.8
    assert "`15:8` is block 15 (SX+NG-k3) with channel ratio index 8, i.e. ratio 1.8" in md
    assert "| front #1 (best adv) | `" + A + "` | 1.8000M | best under attack on the search's front" in md
    summary = json.loads((report.out / "report.json").read_text())
    assert summary["legonet"]["architecture"] == LEGO.key and summary["top_k"] == 5
    assert not list(report.out.glob(".*.tmp"))


def _points(ax, gid):
    coll = [c for c in ax.collections if c.get_gid() == gid]
    assert len(coll) == 1, gid
    return coll[0]


def test_front_figure_plots_the_input_numbers(report):
    raw = json.loads((SEARCH / "front.json").read_text())
    before = [(100 * (1 - a["objectives"]["adv_acc"]), 100 * (1 - a["objectives"]["clean_acc"]), a["objectives"]["params"])
              for a in raw["architectures"]]
    # scratch: A is the mean of its two seeds (adv 0.50/0.52, clean 0.80/0.82)
    scratch = [(49.0, 19.0, 1.8e6), (53.0, 16.0, 1.7e6), (56.0, 14.0, 1.6e6)]
    finetune = [(60.0, 30.0, 1.8e6), (59.0, 26.0, 1.7e6), (57.0, 20.0, 1.6e6)]
    axes = report.figures["front"].axes
    assert len(axes) == 3
    for ax, expected in zip(axes, (before, scratch, finetune), strict=True):
        pts = _points(ax, "front")
        np.testing.assert_allclose(pts.get_offsets(), [(x, y) for x, y, _ in expected])
        np.testing.assert_allclose(pts.get_sizes(), [MIN_MARKER + (MAX_MARKER - MIN_MARKER) * p / 1.8e6
                                                     for _, _, p in expected])
    lego = _points(axes[1], "extra")
    np.testing.assert_allclose(lego.get_offsets(), [(44.0, 15.0)])
    assert not [c for c in axes[0].collections if c.get_gid() == "extra"]
    # the same architecture has the same colour in every panel; different ones differ
    colours = [_points(ax, "front").get_facecolors()[:, :3] for ax in axes]
    np.testing.assert_allclose(colours[1], colours[0][:3])
    np.testing.assert_allclose(colours[2], colours[0][:3])
    assert len({tuple(c) for c in colours[0]}) == 4
    # front_points.csv holds exactly the plotted numbers
    rows = _rows(report.out / "front_points.csv")
    panels = list(dict.fromkeys(r["panel"] for r in rows))
    assert len(panels) == 3
    for ax, panel in zip(axes, panels, strict=True):
        mine = [r for r in rows if r["panel"] == panel]
        plotted = np.vstack([c.get_offsets() for c in ax.collections if c.get_gid() in ("front", "extra")])
        np.testing.assert_allclose([(float(r["adv_error_pct"]), float(r["clean_error_pct"])) for r in mine], plotted)
    assert [r["label"] for r in rows if r["panel"] == panels[1]] == ["front #1 (best adv)", "front #2", "front #3",
                                                                      "LegoNet"]
    # one scale for every panel, so that before and after can be compared by eye
    assert len({ax.get_xlim() for ax in axes}) == 1 and len({ax.get_ylim() for ax in axes}) == 1
    # titles say how the models were trained, not which experiment holds them
    assert [ax.get_title() for ax in axes[1:]] == ["after retraining: trained from scratch (test split)",
                                                    "after retraining: fine-tuned from the supernet (test split)"]
    # a size legend: marker area = parameters, from the smallest to the largest plotted model
    (legend,) = [lg for lg in report.figures["front"].legends if lg.get_gid() == "sizes"]
    assert [t.get_text() for t in legend.get_texts()] == ["1.3526M", "1.5763M", "1.8000M"]
    assert [t.get_text() for t in axes[0].texts] == ["#1", "#2", "#3", "#4"]


def test_3d_hypervolume_and_statistics_figures_plot_the_input(report):
    ax3 = report.figures["front_3d"].axes[0]
    scratch = next(c for c in ax3.collections if c.get_gid() == "retrain_scratch (scratch)")
    xs, ys, zs = (np.asarray(v) for v in scratch._offsets3d)
    np.testing.assert_allclose(xs[:3], [1.8, 1.7, 1.6])
    np.testing.assert_allclose(ys, [49.0, 53.0, 56.0, 44.0])
    np.testing.assert_allclose(zs, [19.0, 16.0, 14.0, 15.0])

    labels = [t.get_text().strip() for t in ax3.texts if t.get_gid() == "label"]
    assert labels[:4] == ["#1", "#2", "#3", "#4"] and "LegoNet" in labels

    hv_ax = report.figures["hypervolume"].axes[0]
    assert hv_ax.get_ylim()[0] > 0 and hv_ax.yaxis.label.get_gid() == "truncation"
    assert "axis truncated: starts at" in hv_ax.get_ylabel()
    (line,) = [ln for ln in hv_ax.lines if ln.get_gid() == "hypervolume"]
    history = _rows(SEARCH / "history.csv")
    np.testing.assert_allclose(line.get_xdata(), [int(r["generation"]) for r in history])
    np.testing.assert_allclose(line.get_ydata(), [float(r["hypervolume"]) for r in history])

    stats = search_statistics(load_search(SEARCH), 5)
    ax = report.figures["block_stats"].axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), np.asarray(stats.blocks).T)
    np.testing.assert_allclose(_points(ax, "first").get_offsets(), [(i, 15 if i < 8 else 1) for i in range(16)])
    np.testing.assert_allclose(_points(ax, "second").get_offsets(), [(i, 3 if i < 8 else 0) for i in range(16)])
    ax = report.figures["ratio_stats"].axes[0]
    np.testing.assert_array_equal(ax.images[0].get_array(), np.asarray(stats.ratios).T)


# --------------------------------------------------------------------------- numbers
def test_scratch_vs_finetune_differences():
    scratch, finetune = load_retrain(str(SCRATCH)), load_retrain(str(FINETUNE))
    a = next(r for r in scratch if r.architecture == A)
    assert a.runs == 2 and a.clean_acc == pytest.approx(0.81) and a.adv_acc == pytest.approx(0.51)
    metrics, per_arch, summary = scratch_vs_finetune(scratch, finetune)
    assert metrics == ["clean_acc", "pgd10_eps0.05", "pgd10_eps0.1", "pgd20_eps0.05", "pgd20_eps0.1"]
    assert [r["architecture"] for r in per_arch] == [A, B, C]  # the LegoNet was not fine-tuned
    assert [r["clean_acc"] for r in per_arch] == pytest.approx([11.0, 10.0, 6.0])
    assert summary["clean_acc"] == pytest.approx({"avg": 9.0, "min": 6.0, "max": 11.0, "n": 3})
    assert summary["pgd10_eps0.1"] == pytest.approx({"avg": 6.0, "min": 1.0, "max": 11.0, "n": 3})
    assert summary["pgd10_eps0.05"] == pytest.approx({"avg": 25 / 3, "min": 5.0, "max": 11.0, "n": 3})
    assert scratch_vs_finetune(finetune, finetune)[2]["clean_acc"]["max"] == 0.0
    assert scratch_vs_finetune(scratch[:1], finetune[1:]) == ([], [], {})


def test_table_x_pairs_sets_of_the_same_regime():
    def relabel(results, label):
        return [dataclasses.replace(r, set_label=label) for r in results]

    s1, f1 = relabel(load_retrain(str(SCRATCH)), "S1"), relabel(load_retrain(str(FINETUNE)), "S1")
    f2 = relabel(load_retrain(str(FINETUNE)), "S2")
    sets = retrain_sets(s1 + f1 + f2)
    assert [(name, s[0].set_name, f[0].set_name) for name, s, f in scratch_finetune_pairs(sets)] == [
        ("S1", "S1 (scratch)", "S1 (finetune)")]
    sets = retrain_sets(relabel(s1, "S0") + f1 + f2)  # no regime has both: every pair that shares architectures
    assert [name for name, _, _ in scratch_finetune_pairs(sets)] == ["S0 (scratch) vs S1 (finetune)",
                                                                     "S0 (scratch) vs S2 (finetune)"]


def test_report_tables_hold_the_same_numbers(report):
    x = {r["metric"]: r for r in _rows(report.out / "scratch_vs_finetune.csv")}
    assert float(x["clean_acc"]["avg"]) == pytest.approx(9.0) and float(x["pgd20_eps0.1"]["min"]) == pytest.approx(1.0)
    md = (report.out / "report.md").read_text()
    assert "| 9.00 | 6.00 | 11.00 | 8.33 | 5.00 | 11.00 | 6.00 | 1.00 | 11.00 | 3 |" in md
    xi = _rows(report.out / "legonet_vs_best.csv")
    assert [r["row"] for r in xi] == ["LegoNet", "best front", "difference (points; params %)"]
    assert xi[1]["architecture"] == A  # best retrained front architecture by adversarial accuracy
    assert float(xi[2]["clean_acc"]) == pytest.approx(4.0) and float(xi[2]["adv_acc"]) == pytest.approx(5.0)
    assert "| retrain_scratch (scratch): LegoNet |" in md and "| 85.00 | 66.00 | 56.00 | 64.00 | 54.00 |" in md
    best = _rows(report.out / "best.csv")
    assert [(r["set"], r["label"]) for r in best] == [("retrain_scratch (scratch)", "LegoNet"),
                                                       ("retrain_finetune (finetune)", "front #3")]
    assert len(_rows(report.out / "results.csv")) == 7


# --------------------------------------------------------------------------- command line and errors
def test_report_command_with_labels(tmp_path, capsys):
    assert main(["report", "--search", str(SEARCH / "front.json"), "--retrain", f"S1={SCRATCH}",
                 "--retrain", f"S1={FINETUNE}", "--top-k", "5", "--out", str(tmp_path)]) == 0
    assert "report.md" in capsys.readouterr().out
    x = _rows(tmp_path / "scratch_vs_finetune.csv")
    assert {r["pair"] for r in x} == {"S1"}  # scratch and fine-tune of one regime: one Table X row


def test_search_from_a_pipeline_output_folder(tmp_path):
    shutil.copytree(SEARCH, tmp_path / "nni" / "abc123")
    (tmp_path / "pipeline.json").write_text(json.dumps({"search_id": "abc123"}))
    search = load_search(tmp_path)
    assert search.directory == tmp_path / "nni" / "abc123" and len(search.evaluated) == 8


def test_bad_inputs_fail_with_one_line_naming_the_problem(tmp_path, capsys):
    bad = tmp_path / "scratch"
    shutil.copytree(SCRATCH, bad)
    r = json.loads((bad / "trials" / "sB" / "result.json").read_text())
    del r["clean_acc"]
    (bad / "trials" / "sB" / "result.json").write_text(json.dumps(r))
    assert main(["report", "--search", str(SEARCH), "--retrain", str(bad), "--out", str(tmp_path / "o")]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "sB/result.json: field 'clean_acc' missing" in err

    search = tmp_path / "search"
    shutil.copytree(SEARCH, search)
    (search / "history.csv").write_text("generation,hypervolume\n0,0.2\n1,x\n")
    assert main(["report", "--search", str(search), "--out", str(tmp_path / "o")]) == 1
    assert "history.csv:3: hypervolume 'x' is not a number" in capsys.readouterr().err

    (search / "front.json").unlink()
    assert main(["lego", "--search", str(search), "--out", str(tmp_path / "o")]) == 1
    assert "front.json: file not found" in capsys.readouterr().err

    with pytest.raises(ReportError, match="--top-k: must be at least 1"):
        search_statistics(load_search(SEARCH), 0)


def test_unknown_experiment_id(capsys):
    assert main(["report", "--search", "nosuchexperiment0", "--out", "unused"]) == 1
    assert "nosuchexperiment0: neither an experiment directory (with db/nni.sqlite) nor an experiment id known to " \
           "nnictl" in capsys.readouterr().err


# --------------------------------------------------------------------------- the real pipeline
@pytest.mark.slow
def test_report_renders_from_pipeline_artefacts(pipeline, tmp_path):
    out = Path(pipeline["out"])
    search_dir = out / "nni" / pipeline["search_id"]
    # the pipeline built the LegoNet from the search's statistics and retrained it with the front
    lego = load_architecture(out / "legonet" / "legonet.json")
    retrained = {json.loads(p.read_text())["architecture"]
                 for p in (out / "nni" / pipeline["retrain_id"]).rglob("result.json")}
    front, _, _ = load_front(search_dir / "front.json")
    best_adv = pick_front(front, ["best-adv"])[0]
    assert lego.key in retrained and best_adv.key in retrained
    assert (out / "report" / "report.md").exists()

    # the report again, from the experiment ids (nnictl's registry)
    assert main(["report", "--search", pipeline["search_id"], "--retrain", pipeline["retrain_id"],
                 "--out", str(tmp_path)]) == 0
    for name in ("report.md", "front.png", "front_3d.png", "hypervolume.png", "block_stats.png", "ratio_stats.png",
                 "results.csv", "best.csv"):
        assert (tmp_path / name).stat().st_size > 0, name
    evaluated = pipeline["search_trials"]["SUCCEEDED"]
    blocks = read_stats_csv(tmp_path / "block_stats.csv", 22)
    ratios = read_stats_csv(tmp_path / "ratio_stats.csv", 10)
    assert all(sum(row) == min(10, evaluated) for row in blocks + ratios)
    assert legonet(blocks, ratios) == lego == load_architecture(tmp_path / "legonet.json")
    rows = _rows(tmp_path / "front_points.csv")
    before = [r for r in rows if r["panel"].startswith("search")]
    assert [r["architecture"] for r in before] == [a.key for a in front]
    for r, a in zip(before, front, strict=True):
        assert float(r["adv_error_pct"]) == pytest.approx(100 * (1 - a.objectives["adv_acc"]))
        assert float(r["clean_error_pct"]) == pytest.approx(100 * (1 - a.objectives["clean_acc"]))
    hv = _rows(tmp_path / "hypervolume.csv")
    assert [float(h["hypervolume"]) for h in hv] == [float(h["hypervolume"]) for h in _rows(search_dir / "history.csv")]
    md = (tmp_path / "report.md").read_text()
    if lego.key != best_adv.key:
        assert "best front architecture" in md  # Table XI
