"""Search quality at an equal evaluation budget: our NSGA-II vs pymoo NSGA2, Optuna NSGA-II, random.

All methods optimise the analytic 3-objective toy problem over the TAM-NAS genome
(:mod:`strategies.toy`); quality is the hypervolume (:mod:`strategies.hypervolume`: accuracies
as errors, params / 2.5e6, reference point 1.1) of the non-dominated set of *all* evaluated
architectures. Every method gets the same objective function, the same number of evaluations
(checked) and the same hypervolume normalisation and reference point. Usage::

    python -m benchmarks.bench_search_quality [--seeds 20] [--budget 1050] [--json]

Besides median, IQR and range per method, it prints a bootstrap 95% interval of our median
minus the best peer's median (seeds resampled per method), since seed spread is large.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
import time
from collections.abc import Callable

import numpy as np

from search_space.encoding import DEFAULT_OBJECTIVES, NUM_LAYERS, RATIOS, Architecture, allowed_blocks
from strategies.hypervolume import hypervolume_of
from strategies.nsga2 import V1_OPERATORS, NSGA2Config, genome_key, key_to_arch, random_genome
from strategies.runner import run_search
from strategies.toy import toy_objectives

_ALLOWED = [allowed_blocks(i) for i in range(NUM_LAYERS)]


def _ours(seed: int, budget: int, **operators: object) -> list[dict]:
    gens = max(0, (budget - 50) // 50)
    s = run_search(NSGA2Config(generations=gens, seed=seed, **operators), toy_objectives)
    return list(s.results.values())


def ours(seed: int, budget: int) -> list[dict]:
    """Our NSGA-II with its defaults (paper settings + gene crossover, per-layer p_m)."""
    return _ours(seed, budget)


def ours_v1(seed: int, budget: int) -> list[dict]:
    """Our NSGA-II with the operators before the change (layer crossover, per-gene p_m, no retries)."""
    return _ours(seed, budget, **V1_OPERATORS)


def random_search(seed: int, budget: int) -> list[dict]:
    rng = np.random.default_rng(seed)
    seen: dict[str, dict] = {}
    while len(seen) < budget:
        k = genome_key(random_genome(rng))
        if k not in seen:
            seen[k] = toy_objectives(key_to_arch(k))
    return list(seen.values())


def _arch_from_vector(x: np.ndarray) -> Architecture:
    x = np.asarray(np.round(x), dtype=int)
    return Architecture(tuple(_ALLOWED[i][x[i]] for i in range(NUM_LAYERS)),
                        tuple(RATIOS[x[NUM_LAYERS + i]] for i in range(NUM_LAYERS)))


def pymoo_nsga2(seed: int, budget: int) -> list[dict]:
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.optimize import minimize

    evals: list[dict] = []

    class Toy(Problem):
        def __init__(self) -> None:
            xu = [len(a) - 1 for a in _ALLOWED] + [len(RATIOS) - 1] * NUM_LAYERS
            super().__init__(n_var=2 * NUM_LAYERS, n_obj=3, xl=0, xu=np.array(xu), vtype=int)

        def _evaluate(self, X, out, *args, **kwargs):
            rows = []
            for x in X:
                v = toy_objectives(_arch_from_vector(x))
                evals.append(v)
                rows.append([-v["adv_acc"], -v["clean_acc"], v["params"] / 2.5e6])
            out["F"] = np.array(rows)

    # pymoo's documented recipe for integer variables.
    algo = NSGA2(pop_size=50, n_offsprings=50, sampling=IntegerRandomSampling(),
                 crossover=SBX(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
                 mutation=PM(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
                 eliminate_duplicates=True)
    minimize(Toy(), algo, ("n_evals", budget), seed=seed, verbose=False)
    return evals[:budget]


def optuna_nsga2(seed: int, budget: int) -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    evals: list[dict] = []

    def objective(trial):
        arch = Architecture(tuple(trial.suggest_categorical(f"layer_{i}", _ALLOWED[i]) for i in range(NUM_LAYERS)),
                            tuple(trial.suggest_categorical(f"ratio_{i}", RATIOS) for i in range(NUM_LAYERS)))
        v = toy_objectives(arch)
        evals.append(v)
        return v["adv_acc"], v["clean_acc"], v["params"]

    study = optuna.create_study(directions=["maximize", "maximize", "minimize"],
                                sampler=optuna.samplers.NSGAIISampler(population_size=50, seed=seed))
    study.optimize(objective, n_trials=budget)
    return evals


OURS = "ours (NSGA-II, defaults)"
METHODS: dict[str, Callable[[int, int], list[dict]]] = {
    OURS: ours, "ours, previous operators": ours_v1, "pymoo NSGA2": pymoo_nsga2,
    "optuna NSGAIISampler": optuna_nsga2, "random search": random_search}
PEERS = ("pymoo NSGA2", "optuna NSGAIISampler", "random search")


def median_gap_interval(ours_hv: list[float], peer_hv: list[float], n_boot: int = 10000,
                        seed: int = 0) -> tuple[float, float]:
    """Bootstrap 95% interval of ``median(ours) - median(peer)``, seeds resampled per method."""
    rng = np.random.default_rng(seed)
    a, b = np.asarray(ours_hv), np.asarray(peer_hv)
    ma = np.median(a[rng.integers(len(a), size=(n_boot, len(a)))], axis=1)
    mb = np.median(b[rng.integers(len(b), size=(n_boot, len(b)))], axis=1)
    lo, hi = np.quantile(ma - mb, [0.025, 0.975])
    return float(lo), float(hi)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--seeds", type=int, default=20)
    p.add_argument("--budget", type=int, default=50 + 20 * 50)
    p.add_argument("--methods", nargs="+", default=list(METHODS), choices=list(METHODS))
    p.add_argument("--json", action="store_true")
    args = p.parse_args(argv)
    if args.budget < 50 or (args.budget - 50) % 50:
        p.error("--budget: expected 50 + k * 50 (population 50, offspring 50 per generation)")
    logging.basicConfig(level=logging.WARNING)
    report = {"budget": args.budget, "seeds": args.seeds, "methods": {}}
    for name in args.methods:
        hvs, t_total, n_total = [], 0.0, 0
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            evals = METHODS[name](seed, args.budget)
            t_total += time.perf_counter() - t0
            if len(evals) != args.budget:  # equal budgets or the comparison means nothing
                raise RuntimeError(f"{name}, seed {seed}: {len(evals)} evaluations, budget {args.budget}")
            n_total += len(evals)
            hvs.append(hypervolume_of(evals, DEFAULT_OBJECTIVES))
        q = np.quantile(hvs, [0.25, 0.75])
        report["methods"][name] = {"median": statistics.median(hvs), "iqr": [float(q[0]), float(q[1])],
                                   "min": min(hvs), "max": max(hvs),
                                   "seconds_per_1000": 1000 * t_total / n_total, "hypervolumes": hvs}
    peers = [m for m in PEERS if m in report["methods"]]
    if OURS in report["methods"] and peers:
        best = max(peers, key=lambda m: report["methods"][m]["median"])
        report["best_peer"] = best
        report["gap_vs_best_peer"] = report["methods"][OURS]["median"] - report["methods"][best]["median"]
        report["gap_interval_95"] = median_gap_interval(report["methods"][OURS]["hypervolumes"],
                                                        report["methods"][best]["hypervolumes"])
    if args.json:
        print(json.dumps(report, indent=1))
    else:
        print(f"budget {args.budget} evaluations, {args.seeds} seeds; hypervolume of all evaluations")
        print(f"{'method':34s} {'median':>8s} {'IQR':>19s} {'min':>8s} {'max':>8s} {'s/1000':>8s}")
        for name, r in report["methods"].items():
            print(f"{name:34s} {r['median']:8.4f} [{r['iqr'][0]:.4f}, {r['iqr'][1]:.4f}] {r['min']:8.4f} "
                  f"{r['max']:8.4f} {r['seconds_per_1000']:8.2f}")
        if "best_peer" in report:
            lo, hi = report["gap_interval_95"]
            print(f"ours - {report['best_peer']} (median): {report['gap_vs_best_peer']:+.4f}, "
                  f"bootstrap 95% [{lo:+.4f}, {hi:+.4f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
