"""Speed of the NSGA-II core on long runs: proposals per CPU-second, today's search next to the
one it replaced, side by side in one run.

The core is :class:`strategies.nsga2.NSGA2Search` with a cheap evaluator (the toy problem,
:mod:`strategies.toy`): its ``pending`` and ``tell`` calls, which draw every proposal (tournament,
crossover, mutation, repair), select survivors, keep the archive front and its hypervolume, are
timed with ``time.process_time``; the evaluations are timed apart and left out. A proposal is one
architecture drawn. Usage::

    python -m benchmarks.bench_nsga2_core [--generations 200] [--population 50] [--offspring 50]
                                          [--legacy-generations 100] [--seed 0] [--json]

``legacy``: the search as it was before the archive front became incremental (it sorted every
result so far each generation with a dense n x n x m dominance matrix, and re-parsed the
population's genomes from their keys), run with the same settings for ``--legacy-generations``
(its cost grows with the square of the results: a full 200 generations take many minutes). Both
runs must give the same history over the generations they share (checked). The floor
([lean-trial]): >= 2,000 proposals per CPU-second over 200 generations (population 50,
offspring 50). The machine's load (``os.getloadavg``) is printed with the figures.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Any

from search_space.architecture import Architecture
from strategies.config import NSGA2Config
from strategies.nsga2 import NSGA2Search
from strategies.operators import fast_non_dominated_sort
from strategies.toy import toy_objectives

FLOOR = 2000.0  # proposals per CPU-second over 200 generations
WINDOWS = ((1, 10), (50, 100), (101, 200), (1, 200))  # generations a..b, both included


class LegacySearch(NSGA2Search):
    """The archive front as it was computed before: every result sorted again at each call."""

    def front_keys(self) -> list[str]:
        keys = sorted(self.results, key=lambda k: (self.born[k], k))
        if not keys:
            return []
        return [keys[i] for i in fast_non_dominated_sort(self._F(keys))[0]]

    def _genome(self, key: str):
        return Architecture.from_key(key).genome


def run(search_class: type[NSGA2Search], config: NSGA2Config) -> dict[str, Any]:
    """Drive one search to the end; CPU seconds of the core per generation, and the history."""
    t0 = time.process_time()
    search = search_class(config)  # draws generation 0
    start = time.process_time() - t0
    core: list[float] = []  # CPU seconds spent in the core during each generation
    proposed: list[int] = [len(search.proposals)]  # proposals of each generation, drawn as the one before ends
    evaluation = 0.0
    while not search.finished:
        spent, start = start, 0.0
        t0 = time.process_time()
        pending = search.pending()
        spent += time.process_time() - t0
        for key in pending:
            t0 = time.process_time()
            metrics = toy_objectives(Architecture.from_key(key))
            t1 = time.process_time()
            search.tell(key, metrics)
            spent += time.process_time() - t1
            evaluation += t1 - t0
        core.append(spent)
        proposed.append(len(search.proposals))
    return {"core": core, "proposed": proposed, "evaluation_s": evaluation, "history": search.history,
            "front": search.front_keys(), "proposals": len(search.born)}


def rates(result: dict[str, Any]) -> dict[str, float | None]:
    """Proposals per CPU-second while generations a..b run (the proposals drawn then are those of
    generations a+1..b+1); ``all``: every proposal over the whole core time (generation 0 included)."""
    core, proposed = result["core"], result["proposed"]
    out: dict[str, float | None] = {}
    for a, b in WINDOWS:
        seconds = sum(core[a:b + 1])
        out[f"{a}-{b}"] = None if b >= len(core) or seconds <= 0 else sum(proposed[a + 1:b + 2]) / seconds
    total = sum(core)
    out["all"] = sum(proposed) / total if total > 0 else None
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m benchmarks.bench_nsga2_core", description=__doc__.split("\n\n")[0])
    p.add_argument("--generations", type=int, default=200)
    p.add_argument("--population", type=int, default=50)
    p.add_argument("--offspring", type=int, default=50)
    p.add_argument("--legacy-generations", type=int, default=100,
                   help="generations of the legacy run (0: skip it); its cost grows with the square of the results")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", action="store_true", help="print the figures as JSON")
    args = p.parse_args(argv)
    if args.generations < 1 or args.population < 1 or args.offspring < 1 or args.legacy_generations < 0:
        p.error("--generations, --population and --offspring must be >= 1, --legacy-generations >= 0")

    def config(generations: int) -> NSGA2Config:
        return NSGA2Config(population_size=args.population, offspring_size=args.offspring,
                           generations=generations, seed=args.seed)

    load_before = os.getloadavg()
    runs = {"current": run(NSGA2Search, config(args.generations))}
    if args.legacy_generations:
        runs["legacy"] = run(LegacySearch, config(args.legacy_generations))
        shared = min(args.generations, args.legacy_generations) + 1
        if runs["legacy"]["history"][:shared] != runs["current"]["history"][:shared]:
            sys.stderr.write("error: the legacy and current searches differ\n")
            return 1
    load_after = os.getloadavg()
    report = {"settings": {"generations": args.generations, "population": args.population,
                           "offspring": args.offspring, "legacy_generations": args.legacy_generations,
                           "seed": args.seed},
              "load_average": {"before": load_before, "after": load_after},
              "runs": {name: {"rates": rates(r), "core_s": sum(r["core"]), "evaluation_s": r["evaluation_s"],
                              "proposals": r["proposals"], "front_size": len(r["front"])}
                       for name, r in runs.items()}}
    full = args.generations >= 200 and args.population == 50 and args.offspring == 50
    report["floor"] = {"proposals_per_cpu_s": FLOOR, "measured": report["runs"]["current"]["rates"]["all"],
                       "applies": full, "met": (report["runs"]["current"]["rates"]["all"] or 0.0) >= FLOOR}
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    print(f"NSGA-II core, population {args.population}, offspring {args.offspring}, seed {args.seed}; load average "
          f"{' '.join(f'{x:.2f}' for x in load_before)} -> {' '.join(f'{x:.2f}' for x in load_after)}")
    print("proposals per CPU-second by generations:")
    print(f"  {'run':<8} {'gens':>5} " + " ".join(f"{w:>9}" for w in report["runs"]["current"]["rates"])
          + f" {'core s':>8} {'front':>6}")
    for name, r in report["runs"].items():
        gens = args.generations if name == "current" else args.legacy_generations
        cells = " ".join(f"{v:>9,.0f}" if v is not None else f"{'-':>9}" for v in r["rates"].values())
        print(f"  {name:<8} {gens:>5} {cells} {r['core_s']:>8.2f} {r['front_size']:>6}")
    verdict = "met" if report["floor"]["met"] else "NOT met"
    scope = "" if full else " (floor defined for 200 generations of 50 + 50; these settings differ)"
    print(f"floor {FLOOR:,.0f} proposals per CPU-second over all generations: {verdict}{scope}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
