"""The NSGA-II search against recorded runs (tests/data/nsga2_golden.json).

The runs were recorded with the search as it was before the archive front became incremental
(it re-sorted every result each generation with a dense dominance matrix); the search must
still give the same fronts, histories, populations and proposals. Re-record only when a change
of the search's behaviour is intended::

    .venv/bin/python -m tests.test_nsga2_golden --record
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest

from search_space.architecture import Architecture
from strategies.config import NSGA2Config
from strategies.runner import TrialFailed, run_search
from strategies.toy import toy_objectives
from strategies.toy_trial import fails

GOLDEN = Path(__file__).parent / "data" / "nsga2_golden.json"

RUNS: dict[str, dict] = {
    "paper_operators": {"population_size": 12, "offspring_size": 10, "generations": 30, "tournament_size": 3,
                        "seed": 0},
    "failures_20pct": {"population_size": 20, "offspring_size": 20, "generations": 25, "tournament_size": 4,
                       "seed": 1, "_fail": 0.2},
    "subset": {"population_size": 10, "offspring_size": 10, "generations": 20, "tournament_size": 3, "seed": 2,
               "blocks": [0, 3, 6, 18], "ratios": [0.8, 1.0, 1.2]},
    "param_range": {"population_size": 10, "offspring_size": 8, "generations": 15, "tournament_size": 3,
                    "seed": 3, "param_range": [2e5, 6e5]},
    "v1_operators": {"population_size": 10, "offspring_size": 10, "generations": 15, "tournament_size": 3,
                     "seed": 4, "crossover_unit": "layer", "mutation_unit": "gene", "duplicate_retries": 0},
    "paper_size_long": {"population_size": 50, "offspring_size": 50, "generations": 40, "seed": 7},
}


def _digest(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def replay(spec: dict) -> dict:
    """The recorded view of one run: front and history in full, the rest as digests."""
    spec = dict(spec)
    fail = spec.pop("_fail", 0.0)
    config = NSGA2Config.from_dict(spec)
    params_fn = (lambda a: toy_objectives(a)["params"]) if config.param_range else None

    def evaluate(arch: Architecture):
        if fails(arch, fail):
            raise TrialFailed("injected")
        return toy_objectives(arch)

    s = run_search(config, evaluate, params_fn=params_fn)
    return {"front": s.front_keys(), "history": s.history, "hypervolume": s.hypervolume(),
            "population": _digest(s.population), "born": _digest(s.born), "results": _digest(s.results),
            "failed": _digest(sorted(s.failed))}


def _golden() -> dict:
    return json.loads(GOLDEN.read_text())


@pytest.mark.parametrize("name", sorted(RUNS))
def test_search_equals_recorded_run(name):
    expected = _golden()[name]
    got = json.loads(json.dumps(replay(RUNS[name])))  # floats as JSON writes them
    assert got["front"] == expected["front"]
    assert got["history"] == expected["history"]
    assert got == expected


if __name__ == "__main__":
    if sys.argv[1:] != ["--record"]:
        sys.exit("usage: python -m tests.test_nsga2_golden --record")
    GOLDEN.parent.mkdir(parents=True, exist_ok=True)
    GOLDEN.write_text(json.dumps({name: replay(spec) for name, spec in RUNS.items()}, indent=1) + "\n")
    print(f"wrote {GOLDEN}")
