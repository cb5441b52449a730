"""Results are paired with the parameters of the id each trial reported, not NNI's trial record."""

from __future__ import annotations

import json
import sqlite3

import pytest

from search_space.encoding import DEFAULT_OBJECTIVES
from search_space.params import random_architecture
from strategies.export import fetch_export, front_from_export


def _fake_experiment(tmp_path, swap: bool):
    """An NNI database where trials A and B got each other's parameters (NNI 3.0's FIFO hand-out)."""
    import random

    rng = random.Random(0)
    archs = [random_architecture(rng) for _ in range(2)]
    (tmp_path / "db").mkdir()
    con = sqlite3.connect(tmp_path / "db" / "nni.sqlite")
    con.execute("CREATE TABLE TrialJobEvent (timestamp integer, trialJobId text, event text, data text, "
                "logPath text, sequenceId integer, message text, environmentId text)")
    con.execute("CREATE TABLE MetricData (timestamp integer, trialJobId text, parameterId text, type text, "
                "sequence integer, data text)")
    for pid, (trial, arch) in enumerate(zip("AB", archs, strict=True)):
        record = {"parameter_id": pid, "parameter_source": "algorithm", "parameters": arch.to_sample(),
                  "parameter_index": 0}
        con.execute("INSERT INTO TrialJobEvent VALUES (?, ?, 'RUNNING', ?, '', ?, NULL, 'local-env')",
                    (pid, trial, json.dumps(record), pid))
        ran = 1 - pid if swap else pid  # the parameter id the trial actually received and reports
        metric = {"default": 0.1 * (ran + 1), "adv_acc": 0.1 * (ran + 1), "clean_acc": 0.5, "params": 1e6 + ran}
        con.execute("INSERT INTO MetricData VALUES (?, ?, ?, 'FINAL', 0, ?)",
                    (10 + pid, trial, str(ran), json.dumps(json.dumps(metric))))
    con.execute("INSERT INTO TrialJobEvent VALUES (20, 'A', 'SUCCEEDED', NULL, '', 0, NULL, 'local-env')")
    con.commit()
    con.close()
    return archs


@pytest.mark.parametrize("swap", [False, True])
def test_results_follow_the_reported_parameter_id(tmp_path, swap):
    archs = _fake_experiment(tmp_path, swap)
    entries = fetch_export(tmp_path)
    assert len(entries) == 2
    for e in entries:
        metric = json.loads(e["value"])  # a JSON string, as in `nnictl experiment export`
        assert e["parameter"] == archs[e["parameterId"]].to_sample()
        assert metric["params"] == 1e6 + e["parameterId"]
        assert e["trialJobId"] == ("AB"[1 - e["parameterId"]] if swap else "AB"[e["parameterId"]])
    front = front_from_export(entries, DEFAULT_OBJECTIVES)
    best = max(front, key=lambda a: a.objectives["adv_acc"])
    assert best.key == archs[1].key and best.objectives["adv_acc"] == pytest.approx(0.2)


def test_unknown_experiment_is_a_clear_error(tmp_path):
    with pytest.raises(ValueError, match="neither an experiment directory"):
        fetch_export(tmp_path / "nope")
