"""``python -m strategies``: search, and front (from an nnictl export file or an experiment)."""

from __future__ import annotations

import dataclasses
import json
import logging
import sqlite3

import pytest

from search_space.architecture import Architecture
from search_space.files import load_front
from search_space.space import SpaceConfig
from strategies.__main__ import _parser, main
from strategies.config import CONFIG_KEYS, NSGA2Config


def _export(tmp_path, front) -> str:
    """An nnictl export of these evaluations: value is a JSON string of the metric dict."""
    export = [{"parameter": Architecture.from_key(a.key).to_sample(), "trialJobId": f"t{i}",
               "value": json.dumps({"default": a.objectives["adv_acc"], **a.objectives})}
              for i, a in enumerate(front)]
    export.append({"parameter": {"lr": 1}, "value": "{}", "trialJobId": "bad"})  # skipped with a warning
    (tmp_path / "export.json").write_text(json.dumps(export))
    return str(tmp_path / "export.json")


def test_search_then_front_from_export(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--population", "8", "--offspring", "6", "--generations", "2", "--tournament", "3",
                 "--seed", "1", "--out", str(out)]) == 0
    state_front, objectives, space = load_front(out / "front.json")
    assert space is None  # no --dataset/--width: front.json records no space rather than a made-up one
    export = _export(tmp_path, state_front)
    assert main(["front", export, "--dataset", "cifar10", "--width", "2", "--out", str(tmp_path / "front.json")]) == 0
    front, _, space = load_front(tmp_path / "front.json")
    assert {a.key for a in front} == {a.key for a in state_front}
    assert all(a.provenance["trial_id"].startswith("t") for a in front)
    assert space == SpaceConfig.for_dataset("cifar10", 2)


def test_front_needs_a_space(tmp_path, capsys):
    """An export file records no space: --dataset and --width are required, not silently fashion_mnist x1."""
    export = _export(tmp_path, [])
    for flags in ([], ["--dataset", "svhn"], ["--width", "2"]):
        assert main(["front", export, *flags, "--out", str(tmp_path / "f.json")]) == 2
        assert capsys.readouterr().err == (f"error: {export} records no space: give --dataset and --width "
                                           "(the supernet's data set and width multiplier)\n")
    assert not (tmp_path / "f.json").exists()


def _experiment(tmp_path, class_args) -> str:
    """An experiment directory as NNI 3.0 leaves it: the config in ExperimentProfile, one finished trial."""
    arch = Architecture.from_genes([(3, 4)] * 16)
    (tmp_path / "exp" / "db").mkdir(parents=True)
    con = sqlite3.connect(tmp_path / "exp" / "db" / "nni.sqlite")
    con.execute("CREATE TABLE ExperimentProfile (params text, id text, execDuration integer, startTime integer, "
                "endTime integer, logDir text, nextSequenceId integer, revision integer)")
    con.execute("CREATE TABLE TrialJobEvent (timestamp integer, trialJobId text, event text, data text, "
                "logPath text, sequenceId integer, message text, environmentId text)")
    con.execute("CREATE TABLE MetricData (timestamp integer, trialJobId text, parameterId text, type text, "
                "sequence integer, data text)")
    for revision, args in enumerate([{}, class_args]):  # the latest revision counts
        params = {"experimentName": "x", "tuner": {"className": "strategies.tuner.NSGA2Tuner", "classArgs": args}}
        con.execute("INSERT INTO ExperimentProfile (params, id, revision) VALUES (?, 'exp', ?)",
                    (json.dumps(params), revision))
    con.execute("INSERT INTO TrialJobEvent VALUES (0, 'A', 'RUNNING', ?, '', 0, NULL, 'local')",
                (json.dumps({"parameter_id": 0, "parameters": arch.to_sample()}),))
    metric = {"default": 0.3, "adv_acc": 0.3, "clean_acc": 0.6, "params": 1e6}
    con.execute("INSERT INTO MetricData VALUES (1, 'A', '0', 'FINAL', 0, ?)", (json.dumps(json.dumps(metric)),))
    con.commit()
    con.close()
    return str(tmp_path / "exp")


def test_front_takes_the_space_from_the_experiment(tmp_path, capsys):
    exp = _experiment(tmp_path, {"population_size": 4, "dataset": "cifar10", "width_multiplier": 2})
    assert main(["front", exp, "--out", str(tmp_path / "f.json")]) == 0
    front, _, space = load_front(tmp_path / "f.json")
    assert space == SpaceConfig.for_dataset("cifar10", 2) and len(front) == 1
    assert main(["front", exp, "--width", "2", "--dataset", "cifar10", "--out", str(tmp_path / "f.json")]) == 0
    capsys.readouterr()
    assert main(["front", exp, "--width", "1", "--out", str(tmp_path / "f.json")]) == 2
    assert capsys.readouterr().err.startswith(f"error: {exp}.space.width_multiplier: 2, but --width 1 was given")
    # no space in the classArgs (nor a front.json): the flags are required
    exp = _experiment(tmp_path / "old", {"population_size": 4})
    assert main(["front", exp, "--out", str(tmp_path / "g.json")]) == 2
    assert "records no space: give --dataset and --width" in capsys.readouterr().err
    assert main(["front", exp, "--dataset", "svhn", "--width", "1", "--out", str(tmp_path / "g.json")]) == 0
    assert load_front(tmp_path / "g.json")[2] == SpaceConfig.for_dataset("svhn")


def test_errors_are_one_line_with_exit_code_2(tmp_path, capsys):
    assert main(["front", str(tmp_path / "missing-experiment"), "--dataset", "svhn", "--width", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    for argv, message in [(["search", "--population", "0"], "population_size: expected an integer >= 1, got 0"),
                          (["search", "--population", "x"], "argument --population: invalid int value: 'x'"),
                          (["space"], "argument command: invalid choice: 'space' (choose from 'search', 'front')"),
                          (["report"], "argument command: invalid choice: 'report' (choose from 'search', 'front')"),
                          (["search", "--dataset", "cifar10"],
                           "give both --dataset and --width (the supernet's data set and width multiplier)"),
                          (["search", "--param-range", "1e6", "2e6"],
                           "--param-range counts parameters in a space: give --dataset and --width")]:
        assert main(argv) == 2, argv
        assert capsys.readouterr().err == f"error: {message}\n", argv


def test_search_flags_are_the_config_fields():
    """Every NSGA2Config field is a flag; unset flags give the config's own defaults."""
    parser = _parser()
    search = parser._subparsers._group_actions[0].choices["search"]
    dests = {a.dest for a in search._actions}
    assert set(CONFIG_KEYS) <= dests and set(CONFIG_KEYS) == {f.name for f in dataclasses.fields(NSGA2Config)}
    from strategies.config import config_from_arguments

    assert config_from_arguments(parser.parse_args(["search"])) == NSGA2Config()
    args = parser.parse_args(["search", "--hv-bounds", "params:0:3e6", "--objectives", "adv_acc:max", "params:min",
                              "--param-range", "1e6", "2e6", "--blocks", "0,6", "--ratios", "1,0.8", "--seed", "3"])
    assert config_from_arguments(args) == NSGA2Config.from_dict({
        "hv_bounds": {"params": [0, 3e6]}, "objectives": ["adv_acc:max", "params:min"], "param_range": [1e6, 2e6],
        "blocks": [0, 6], "ratios": [1.0, 0.8], "seed": 3})


def test_search_operator_flags_match_config(tmp_path):
    from strategies.nsga2 import V1_OPERATORS
    from strategies.runner import run_search
    from strategies.toy import toy_objectives

    argv = ["search", "--population", "8", "--offspring", "6", "--generations", "2", "--tournament", "3",
            "--seed", "2", "--crossover-unit", "layer", "--mutation-unit", "gene", "--duplicate-retries", "0",
            "--out", str(tmp_path)]
    assert main(argv) == 0
    cfg = NSGA2Config(population_size=8, offspring_size=6, generations=2, tournament_size=3, seed=2, **V1_OPERATORS)
    front, _, _ = load_front(tmp_path / "front.json")
    assert [a.key for a in front] == run_search(cfg, toy_objectives).front_keys()


def test_old_spellings_still_work_with_a_warning(tmp_path, caplog):
    with caplog.at_level(logging.WARNING):
        assert main(["search", "--population", "4", "--offspring", "2", "--generations", "1", "--tournament", "2",
                     "--seed", "0", "--dataset", "svhn", "--width-multiplier", "2", "--output", str(tmp_path)]) == 0
    assert load_front(tmp_path / "front.json")[2] == SpaceConfig.for_dataset("svhn", 2)
    assert [r.getMessage() for r in caplog.records if "deprecated" in r.getMessage()] == [
        "--width-multiplier is deprecated: use --width",
        "--output is deprecated: use --out"]


def test_search_subset_flags(tmp_path, capsys):
    from strategies.runner import run_search
    from strategies.toy import toy_objectives

    argv = ["search", "--population", "8", "--offspring", "6", "--generations", "2", "--tournament", "3",
            "--seed", "3", "--blocks", "0,3,6,18", "--ratios", "0.8,1,1.2", "--out", str(tmp_path)]
    assert main(argv) == 0
    cfg = NSGA2Config(population_size=8, offspring_size=6, generations=2, tournament_size=3, seed=3,
                      blocks=[0, 3, 6, 18], ratios=[0.8, 1.0, 1.2])
    front, _, _ = load_front(tmp_path / "front.json")
    assert [a.key for a in front] == run_search(cfg, toy_objectives).front_keys()
    assert all(set(a.blocks) <= {0, 3, 6, 18} and set(a.ratios) <= {0.8, 1.0, 1.2} for a in front)
    capsys.readouterr()
    for flag, value, match in [("--blocks", "0,x", "--blocks: expected a comma-separated list of ints"),
                               ("--blocks", "18,19", "blocks: [18, 19] leaves no candidate for stride-2 layer 0"),
                               ("--ratios", "0.8,0.9", "ratios: 0.9 in [0.8, 0.9] is not one of"),
                               ("--hv-bounds", "params:1", "--hv-bounds: expected NAME:LOW:HIGH, got 'params:1'"),
                               ("--param-range", "1e5 2e5 --dataset fashion_mnist --width 1",
                                "param_range: [100,000, 200,000] reaches no architecture")]:
        assert main(["search", flag, *value.split(" "), "--out", str(tmp_path / "bad")]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and match in err and "\n" not in err


@pytest.mark.parametrize("command", ["search", "front"])
def test_help_lists_out_and_width(command, capsys):
    with pytest.raises(SystemExit) as e:
        main([command, "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "--out" in out and "--width" in out
    assert "--output" not in out and "--width-multiplier" not in out  # old spellings: accepted, not advertised


def always_fails(arch):
    """An evaluator for ``--evaluator tests.test_nsga2_cli:always_fails``."""
    from strategies.runner import TrialFailed

    raise TrialFailed("no checkpoint at runs/x.ckpt")


def test_search_whose_evaluations_all_fail_stops_with_the_reason(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--evaluator", "tests.test_nsga2_cli:always_fails", "--population", "8", "--fail-fast",
                 "3", "--seed", "0", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: the first 3 evaluations all failed (fail_fast_trials 3); the first: ")
    assert err.endswith(": no checkpoint at runs/x.ckpt\n") and err.count("\n") == 1
