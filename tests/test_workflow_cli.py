"""``python -m workflow``: check, lego (from tables), gather, the retrain picks, progress and the demo's last lines."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from search_space.encoding import Architecture, SpaceConfig, load_architecture, load_front
from tests.conftest import REPO
from workflow import nnictl
from workflow.__main__ import main
from workflow.choice import front_labels, pick_front, short_label, with_legonet
from workflow.pipeline import PROFILES, TimeLimits, closing_lines, retrain_threads
from workflow.progress import ExperimentProgress, elapsed, trial_log_dir
from workflow.results import gather, labels_from_front

DATA = Path(__file__).parent / "data" / "report"


def _arch(block: int, ratio: int, adv: float, clean: float, params: float) -> Architecture:
    a = Architecture.from_genes([(block, ratio)] * 16)
    return Architecture(a.blocks, a.ratios, {"adv_acc": adv, "clean_acc": clean, "params": params})


# The demo front: A is the oldest and the weakest under attack, C the strongest, D the smallest.
FRONT = [_arch(0, 3, 0.28, 0.74, 1.40e6), _arch(0, 4, 0.33, 0.71, 1.39e6), _arch(6, 3, 0.40, 0.66, 1.41e6),
         _arch(6, 4, 0.31, 0.69, 1.37e6)]


def test_the_retrain_set_holds_the_best_under_attack_the_best_clean_and_the_smallest():
    picked = pick_front(FRONT)
    assert [a.key for a in picked] == [FRONT[2].key, FRONT[0].key, FRONT[3].key]
    assert [a.provenance["label"] for a in picked] == ["front #3 (best adv)", "front #1 (best clean)",
                                                        "front #4 (smallest)"]
    assert "best under attack" in picked[0].provenance["why"] and "1.3700M" in picked[2].provenance["why"]
    # one architecture with two roles is retrained once
    twice = pick_front([FRONT[0], _arch(6, 3, 0.40, 0.66, 1.30e6)])
    assert [a.provenance["chosen_as"] for a in twice] == [["best-adv", "smallest"], ["best-clean"]]
    lego = _arch(1, 1, 0, 0, 1.0e6)
    assert [a.provenance["label"] for a in with_legonet(picked, lego)][-1] == "LegoNet"
    same = with_legonet(picked, picked[0])
    assert len(same) == 3 and same[0].provenance["label"] == "front #3 (best adv) = LegoNet"
    assert front_labels(FRONT)[FRONT[1].key] == "front #2"
    assert short_label("front #3 (best adv, smallest)") == "#3" and short_label("LegoNet") == "LegoNet"


def test_lego_from_the_paper_tables(tmp_path, capsys):
    assert main(["lego", "--dataset", "cifar10", "--width", "2", "--out", str(tmp_path)]) == 0
    arch = load_architecture(tmp_path / "legonet.json", SpaceConfig.for_dataset("cifar10", 2))
    # Table XIV/XV: layer 0 -> block 15 (4 of 10), ratio 1.8 (6 of 10); layer 15 -> ratio 0.2 (10 of 10)
    assert arch.blocks[0] == 15 and arch.ratios[0] == 1.8 and arch.ratios[15] == 0.2
    assert arch.blocks[12] == 0 and arch.blocks[4] == 2  # stride-2 skip of layer 12; ties to the lower id
    assert arch.provenance["block_stats"] == "paper Table XIV" and arch.objectives["params"] > 0
    capsys.readouterr()
    assert main(["lego", "--dataset", "cifar10", "--width", "2"]) == 0  # no --out: JSON on stdout
    assert json.loads(capsys.readouterr().out)["format"] == "tamnas-architecture"


@pytest.mark.parametrize("argv, match", [
    (["lego"], "--dataset and --width: required without --search"),
    (["lego", "--dataset", "cifar10", "--width", "1", "--pick", "smallest"], "--pick: only with --search"),
    (["lego", "--search", str(DATA / "search")], "--out: required with --search"),
    (["lego", "--search", str(DATA / "search"), "--out", "x", "--dataset", "svhn"], "--dataset: not with --search"),
    (["lego", "--search", str(DATA / "search"), "--out", "x", "--pick", "fastest"], "--pick: expected"),
    (["lego", "--search", str(DATA / "search"), "--out", "x", "--front-top", "-1"], "expected an integer >= 0"),
    (["report", "--search", "x", "--out", "y", "--top-k", "0"], "expected an integer >= 1"),
    (["pipeline", "--search-timeout", "soon"], "invalid number of seconds"),
    (["nosuchcommand"], "invalid choice"),
])
def test_usage_errors_are_one_line_and_exit_2(argv, match, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and match in err and "\n" not in err


def test_bad_stats_file_names_row_and_column(tmp_path, capsys):
    from search_space.legonet import PAPER_BLOCK_STATS

    text = PAPER_BLOCK_STATS.read_text().splitlines()
    text[4] = text[4].replace(",0,", ",x,", 1)
    (tmp_path / "bad.csv").write_text("\n".join(text))
    assert main(["lego", "--block-stats", str(tmp_path / "bad.csv"), "--dataset", "cifar10", "--width", "1"]) == 1
    err = capsys.readouterr().err
    assert "bad.csv:5: column" in err and "'x' is not a count" in err


def test_gather_labels_rows_from_the_retrain_front(tmp_path, capsys):
    assert main(["lego", "--search", str(DATA / "search"), "--top-k", "5", "--out", str(tmp_path / "lego")]) == 0
    labels = labels_from_front(tmp_path / "lego" / "retrain_front.json")
    assert list(labels.values()) == ["front #1 (best adv)", "front #4 (best clean, smallest)", "LegoNet"]
    csv_text, md, results = gather([DATA / "retrain_scratch"], labels)
    assert len(results) == 5 and len(csv_text.splitlines()) == 6
    header = csv_text.splitlines()[0].split(",")
    assert header[:3] == ["label", "set", "init"] and "clean_acc" in header and "pgd10_eps0.1" in header
    lines = md.splitlines()
    assert lines[0].startswith("Test split, 100 test images per model (±5.0 points") and "trained from scratch" in lines[0]
    assert "| Model | Size | clean | pgd10@0.05 | pgd10@0.1 | pgd20@0.05 | pgd20@0.1 |" in md
    rows = [ln.split(" | ")[0].lstrip("| ") for ln in lines if ln.startswith("| ") and "Model" not in ln]
    assert rows == ["front #1 (best adv), seed 0", "front #1 (best adv), seed 1", "LegoNet", "R1", "R2"]
    assert "`15:8` is block 15 (SX+NG-k3) with channel ratio index 8, i.e. ratio 1.8" in md
    # the command writes both files and prints the table
    assert main(["gather", str(DATA / "retrain_scratch"), str(DATA / "retrain_finetune"), "--front",
                 str(tmp_path / "lego" / "retrain_front.json"), "--out", str(tmp_path / "results")]) == 0
    assert "front #1 (best adv), scratch, seed 0" in capsys.readouterr().out
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 1 + 8
    assert main(["gather", str(tmp_path / "nothing"), "--out", str(tmp_path / "r")]) == 1


def test_check_catches_bad_search_configs_before_nnictl_create(tmp_path, capsys, monkeypatch):
    """NNI 3.0 runs no classArgs validator for v2 configs (bad classArgs end as an ERROR experiment
    whose tuner 'did not connect'): `python -m workflow check` names the problem first."""
    from tests.test_supernet_record import make_run

    # a supernet directory that is not there and that no supernet stage beside the config writes: one line
    monkeypatch.chdir(tmp_path)
    shutil.copy(REPO / "nni_configs" / "search_space.json", tmp_path / "search_space.json")
    lone = yaml.safe_load((REPO / "nni_configs" / "search.yml").read_text())
    lone["trialCodeDirectory"] = lone["tuner"]["codeDirectory"] = str(tmp_path)
    (tmp_path / "lone.yml").write_text(yaml.safe_dump(lone))
    assert main(["check", str(tmp_path / "lone.yml")]) == 1
    err = capsys.readouterr().err
    assert "classArgs.supernet" in err and "supernet record not found" in err and err.count("\n") == 1
    # as shipped, the runs that the chain's supernet stage writes are notes; with stand-ins there, all pass
    make_run(tmp_path / "runs" / "demo", "fashion_mnist_quick", name="supernet")
    for name in ("search.yml", "search.cpu.yml", "search.toy.yml"):
        assert main(["check", str(REPO / "nni_configs" / name)]) == 0
        assert "ok: NSGA-II" in capsys.readouterr().out
    good = yaml.safe_load((REPO / "nni_configs" / "search.cpu.yml").read_text())
    good["trialCodeDirectory"] = good["tuner"]["codeDirectory"] = str(tmp_path)  # where the stand-in run is

    def edited(**changes):
        cfg = json.loads(json.dumps(good))
        for dotted, value in changes.items():
            node, *keys = cfg, *dotted.split("__")
            for k in keys[:-1]:
                node = node[k]
            node[keys[-1]] = value
        path = tmp_path / "search.yml"
        path.write_text(yaml.safe_dump(cfg))
        return path

    assert main(["check", str(edited()), "--out", str(tmp_path / "check.txt")]) == 0
    assert "ok: NSGA-II 8 + 2 x 8 = 24" in (tmp_path / "check.txt").read_text()
    for changes, match in [
        ({"tuner__classArgs__population_size": 0}, "tuner.classArgs: NSGA2Tuner classArgs: population_size: "
                                                   "expected an integer >= 1, got 0"),
        ({"maxTrialNumber": 20}, "maxTrialNumber: 20 is below the search's budget 8 + 2 x 8 = 24"),
        ({"tuner__className": "nni.algorithms.hpo.tpe_tuner.TpeTuner"}, "tuner: expected className"),
        ({"trialConcurrency": 0}, "trialConcurrency: 0; expected an integer >= 1"),
    ]:
        path = edited(**changes)
        assert main(["check", str(path)]) == 1, changes
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {path}: ") and match in err and "\n" not in err, (changes, err)


def test_progress_reports_counts_failures_and_the_hypervolume(tmp_path, monkeypatch, caplog):
    jobs = [{"trialJobId": "a", "status": "SUCCEEDED"}, {"trialJobId": "b", "status": "RUNNING"},
            {"trialJobId": "c", "status": "FAILED", "logPath": "file://localhost:/x/trials/c"}]
    monkeypatch.setattr(nnictl, "trial_jobs", lambda port: jobs)
    (tmp_path / "history.csv").write_text("generation,evaluations,failures,front_size,hypervolume\n0,8,1,3,0.2817\n")
    progress = ExperimentProgress("search", 1, 24, tmp_path)
    with caplog.at_level("INFO", logger="workflow"):
        progress({"status": "RUNNING"})
        progress({"status": "RUNNING"})  # nothing new: no second line
    text = caplog.text
    assert "search: trial c FAILED; its logs: /x/trials/c" in text and text.count("FAILED;") == 1
    assert "search: 2/24 trials done (1 running, 1 failed), generation 0, hypervolume 0.2817, 0s" in text
    assert text.count("trials done") == 1
    assert elapsed(185) == "3m05s" and trial_log_dir({"trialJobId": "z"}, tmp_path) == str(tmp_path / "trials" / "z")


def test_time_limits_scale_with_the_machine_or_are_given():
    demo = PROFILES["demo"]
    limits = TimeLimits().resolve(demo, supernet_seconds=800)  # twice the idle machine's supernet time
    assert limits["search"][0] == pytest.approx(2 * demo.search_timeout) and "x 2.00" in limits["search"][1]
    assert TimeLimits().resolve(demo, 100)["retrain"][0] == demo.retrain_timeout  # never below the base
    assert TimeLimits(search=60).resolve(demo, 800)["search"] == (60.0, "--search-timeout 60")


def test_the_demo_ends_with_how_to_stop_its_experiment_and_a_privacy_note():
    s = {"out": "/r", "wall_seconds": 60, "supernet_seconds": 1, "search_seconds": 2, "retrain_seconds": 3,
         "search_port": 8123, "search_id": "abc123"}
    for keep in (True, False):
        text = "\n".join(closing_lines(s, keep))
        assert "nnictl stop abc123" in text and "--all" not in text
        assert "every network interface" in text and "without authentication" in text and "ssh -L" in text
    assert "http://localhost:8123" in "\n".join(closing_lines(s, True))


def test_the_report_path_does_not_import_torch():
    code = ("import sys, workflow.report, workflow.__main__, workflow.pipeline; "
            "assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)")
    subprocess.run([sys.executable, "-c", code], check=True, cwd=REPO)


def test_lego_from_a_search_round_trips_through_the_tables(tmp_path):
    assert main(["lego", "--search", str(DATA / "search"), "--top-k", "5", "--out", str(tmp_path)]) == 0
    archs, _, _ = load_front(tmp_path / "retrain_front.json")
    assert main(["lego", "--block-stats", str(tmp_path / "block_stats.csv"), "--ratio-stats",
                 str(tmp_path / "ratio_stats.csv"), "--dataset", "fashion_mnist", "--width", "1",
                 "--out", str(tmp_path / "again")]) == 0
    assert load_architecture(tmp_path / "again" / "legonet.json") == archs[-1]


def test_the_demo_retrains_its_pick_on_both_cores_and_with_legonet_adds_the_legonet(tmp_path, monkeypatch, capsys):
    import workflow.pipeline as wp

    seen = []

    def fake_pipeline(out, profile, **kwargs):
        seen.append(profile)
        Path(out).mkdir(parents=True, exist_ok=True)
        (Path(out) / "results.md").write_text("| Model |\n")
        return {"out": str(out)}

    monkeypatch.setattr(wp, "run_pipeline", fake_pipeline)
    monkeypatch.setattr(wp, "closing_lines", lambda s, keep: ["done"])
    demo = PROFILES["demo"]
    assert not demo.retrain_legonet
    assert retrain_threads(1, 2, cores=2) == 2 and retrain_threads(2, 2, cores=2) == 1  # one model: both cores
    assert retrain_threads(3, 2, cores=2) == 1 and retrain_threads(1, 2, cores=1) == 1
    assert PROFILES["tiny"].retrain_legonet
    assert main(["pipeline", "--out", str(tmp_path / "a")]) == 0
    assert main(["pipeline", "--out", str(tmp_path / "b"), "--with-legonet"]) == 0
    assert seen[0] == demo
    assert seen[1].retrain_legonet and seen[1].retrain_overrides == demo.retrain_overrides
    assert seen[1].retrain_roles == demo.retrain_roles
