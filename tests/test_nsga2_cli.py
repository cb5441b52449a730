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
