"""``python -m strategies``: search, front (from an nnictl export file) and space."""

from __future__ import annotations

import json

from search_space.encoding import load_front
from strategies.__main__ import main
from strategies.nsga2 import key_to_arch
from strategies.space import nni_search_space


def test_search_then_front_from_export(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["search", "--population", "8", "--offspring", "6", "--generations", "2", "--tournament", "3",
                 "--seed", "1", "--output", str(out)]) == 0
    state_front, objectives, _ = load_front(out / "front.json")
    # An nnictl export of the same evaluations: value is a JSON string of the metric dict.
    export = [{"parameter": key_to_arch(a.key).to_sample(), "trialJobId": f"t{i}",
               "value": json.dumps({"default": a.objectives["adv_acc"], **a.objectives})}
              for i, a in enumerate(state_front)]
    export.append({"parameter": {"lr": 1}, "value": "{}", "trialJobId": "bad"})  # skipped with a warning
    (tmp_path / "export.json").write_text(json.dumps(export))
    assert main(["front", str(tmp_path / "export.json"), "--output", str(tmp_path / "front.json")]) == 0
    front, _, _ = load_front(tmp_path / "front.json")
    assert {a.key for a in front} == {a.key for a in state_front}
    assert all(a.provenance["trial_id"].startswith("t") for a in front)


def test_errors_are_one_line(tmp_path, capsys):
    assert main(["front", str(tmp_path / "missing-experiment")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "\n" not in err
    assert main(["search", "--population", "0"]) == 1


def test_space_command(tmp_path):
    assert main(["space", "--output", str(tmp_path / "ss.json")]) == 0
    assert json.loads((tmp_path / "ss.json").read_text()) == nni_search_space()


def test_search_operator_flags_match_config(tmp_path):
    from strategies.nsga2 import V1_OPERATORS, NSGA2Config
    from strategies.runner import run_search
    from strategies.toy import toy_objectives

    argv = ["search", "--population", "8", "--offspring", "6", "--generations", "2", "--tournament", "3",
            "--seed", "2", "--crossover-unit", "layer", "--mutation-unit", "gene", "--duplicate-retries", "0",
            "--output", str(tmp_path)]
    assert main(argv) == 0
    cfg = NSGA2Config(population_size=8, offspring_size=6, generations=2, tournament_size=3, seed=2, **V1_OPERATORS)
    front, _, _ = load_front(tmp_path / "front.json")
    assert [a.key for a in front] == run_search(cfg, toy_objectives).front_keys()


def test_search_subset_flags(tmp_path, capsys):
    from strategies.nsga2 import NSGA2Config
    from strategies.runner import run_search
    from strategies.toy import toy_objectives

    argv = ["search", "--population", "8", "--offspring", "6", "--generations", "2", "--tournament", "3",
            "--seed", "3", "--blocks", "0,3,6,18", "--ratios", "0.8,1,1.2", "--output", str(tmp_path)]
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
                               ("--param-range", "1e5 2e5", "param_range: [100,000, 200,000] reaches no architecture")]:
        assert main(["search", flag, *value.split(" "), "--output", str(tmp_path / "bad")]) == 1
        err = capsys.readouterr().err.strip()
        assert err.startswith("error:") and match in err and "\n" not in err


def test_check_catches_bad_search_configs_before_nnictl_create(tmp_path, capsys):
    """NNI 3.0 runs no classArgs validator for v2 configs (bad classArgs end as an ERROR experiment
    whose tuner 'did not connect'): `python -m strategies check` names the problem first."""
    import shutil

    import yaml

    from tests.conftest import REPO

    for name in ("search.yml", "search.cpu.yml", "search.toy.yml"):
        assert main(["check", str(REPO / "nni_configs" / name)]) == 0
        assert "ok: NSGA-II" in capsys.readouterr().out
    shutil.copy(REPO / "nni_configs" / "search_space.json", tmp_path / "search_space.json")
    good = yaml.safe_load((REPO / "nni_configs" / "search.cpu.yml").read_text())
    good["trialCodeDirectory"] = good["tuner"]["codeDirectory"] = str(REPO)

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

    (tmp_path / "space_bad.json").write_text(json.dumps({"layer_0": {"_type": "choice", "_value": [0]}}))
    for changes, match in [
        ({"tuner__classArgs__population_size": 0}, "tuner.classArgs: NSGA2Tuner classArgs: population_size: "
                                                   "expected an integer >= 1, got 0"),
        ({"tuner__classArgs__blocks": [18, 19]}, "tuner.classArgs: NSGA2Tuner classArgs: blocks: [18, 19] leaves no "
                                                 "candidate for stride-2 layer 0"),
        ({"tuner__classArgs__param_range": [1, 2]}, "param_range: [1, 2] reaches no architecture"),
        ({"maxTrialNumber": 20}, "maxTrialNumber: 20 is below the search's budget 8 + 2 x 8 = 24"),
        ({"searchSpaceFile": "space_bad.json"}, "searchSpaceFile"),
        ({"tuner__className": "nni.algorithms.hpo.tpe_tuner.TpeTuner"}, "tuner: expected className"),
        ({"trialConcurrency": 0}, "NNI rejects the config"),
    ]:
        path = edited(**changes)
        assert main(["check", str(path)]) == 1, changes
        err = capsys.readouterr().err.strip()
        assert err.startswith(f"error: {path}: ") and match in err and "\n" not in err, (changes, err)
