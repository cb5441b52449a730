"""benchmarks/bench_nsga2_core.py on small settings: figures, the legacy comparison, bad arguments."""

from __future__ import annotations

import json

import pytest

from benchmarks import bench_nsga2_core as bench


def test_bench_reports_both_runs_and_checks_they_agree(capsys):
    assert bench.main(["--generations", "12", "--population", "10", "--offspring", "10",
                       "--legacy-generations", "12", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    current, legacy = report["runs"]["current"], report["runs"]["legacy"]
    assert current["proposals"] == legacy["proposals"] == 10 + 12 * 10
    assert current["front_size"] == legacy["front_size"]
    assert current["rates"]["1-10"] > 0 and current["rates"]["50-100"] is None
    assert report["floor"]["applies"] is False and len(report["load_average"]["before"]) == 3


def test_bench_text_output_and_a_legacy_that_differs(capsys, monkeypatch):
    assert bench.main(["--generations", "3", "--population", "6", "--offspring", "6", "--legacy-generations", "0"]) == 0
    out = capsys.readouterr().out
    assert "current" in out and "legacy" not in out.split("front")[1] and "floor 2,000" in out
    monkeypatch.setattr(bench.LegacySearch, "front_keys", lambda self: [])  # a legacy search that disagrees
    assert bench.main(["--generations", "3", "--population", "6", "--offspring", "6",
                       "--legacy-generations", "3"]) == 1
    assert capsys.readouterr().err == "error: the legacy and current searches differ\n"


@pytest.mark.parametrize("flags", [["--generations", "0"], ["--legacy-generations", "-1"], ["--population", "x"]])
def test_bench_bad_arguments_exit_2(flags):
    with pytest.raises(SystemExit) as e:
        bench.main(flags)
    assert e.value.code == 2
