"""Search quality at an equal evaluation budget: our NSGA-II vs pymoo NSGA2, Optuna NSGA-II, random.

All methods optimise the analytic 3-objective toy problem over the TAM-NAS genome
(:mod:`strategies.toy`); quality is the hypervolume (:mod:`strategies.hypervolume`: accuracies
as errors, params / 2.5e6, reference point 1.1) of the non-dominated set of *all* evaluated
architectures. Every method gets the same objective function, the same number of evaluations
(checked) and the same hypervolume normalisation and reference point. Usage::

    python -m benchmarks.bench_search_quality [--seeds 20] [--budget 1050] [--json]

Besides median, IQR and range per method, it prints a bootstrap 95% interval of our median
minus the best peer's median (seeds resampled per method), since seed spread is large.

Table mode (``--table FILE``): the objective is a table of real subnet evaluations of a
supernet (:mod:`benchmarks.real_evals`, e.g. ``benchmarks/data/fashion_mnist_quick_evals.csv``)
instead of the toy function::

    python -m benchmarks.bench_search_quality --table benchmarks/data/fashion_mnist_quick_evals.csv

- An architecture in the table gets its measured ``clean_acc`` / ``adv_acc``; any other gets the
  prediction of an additive surrogate fitted on the table (:class:`AdditiveSurrogate`: per
  accuracy, ridge regression on one-hot block and one-hot ratio of every layer, ``--alpha``),
  clipped to [0, 1]. Its 5-fold cross-validated R^2 is printed, and per method the share of
  evaluations the table answered. ``params`` is exact (parameter table of the table's space).
- Every method searches the table's subset (the sidecar's ``blocks`` / ``ratios``, or those
  found in the table): ours through ``NSGA2Config(blocks=..., ratios=...)``, random search
  through the same :class:`~strategies.operators.GeneSpace`, pymoo and Optuna with one integer or
  categorical variable per gene over the layer's candidates.
- Hypervolume as in toy mode: accuracies as errors, params / :data:`PARAMS_SCALE` (2.5e6, the
  paper's tiny-model ceiling and the search's default bound), reference point 1.1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.real_evals import read_table, sidecar_path
from search_space.architecture import DEFAULT_OBJECTIVES, Architecture
from search_space.params import count_params
from search_space.space import NUM_LAYERS, RATIOS, SpaceConfig
from strategies.config import NSGA2Config
from strategies.hypervolume import DEFAULT_BOUNDS, REFERENCE_POINT, hypervolume_of
from strategies.nsga2 import V1_OPERATORS
from strategies.operators import GeneSpace, random_genome
from strategies.runner import run_search
from strategies.toy import toy_objectives

PARAMS_SCALE = DEFAULT_BOUNDS["params"][1]  # params / 2.5e6 in the hypervolume, in both modes
ACCURACIES = ("clean_acc", "adv_acc")


@dataclass(frozen=True)
class Problem:
    """What the methods optimise: an objective function over architectures and the genes they may use.

    ``evaluate(arch)`` returns at least ``adv_acc``, ``clean_acc`` and ``params``; ``blocks`` /
    ``ratios`` are the subset in :class:`NSGA2Config`'s terms (None: all) and ``space`` its
    :class:`GeneSpace`.
    """

    evaluate: Callable[[Architecture], dict]
    blocks: tuple[int, ...] | None = None
    ratios: tuple[float, ...] | None = None

    @property
    def space(self) -> GeneSpace:
        return GeneSpace.build(self.blocks, self.ratios)

    @property
    def layer_blocks(self) -> list[list[int]]:
        """Candidate block ids of every layer."""
        return [[int(b) for b in c] for c in self.space.blocks]

    @property
    def ratio_values(self) -> list[float]:
        """Candidate ratios (values of Table XV), ascending."""
        return [RATIOS[int(r)] for r in self.space.ratios]


TOY = Problem(toy_objectives)


def _ours(seed: int, budget: int, problem: Problem, **operators: object) -> list[dict]:
    gens = max(0, (budget - 50) // 50)
    evals: list[dict] = []

    def evaluate(arch: Architecture) -> dict:
        v = problem.evaluate(arch)
        evals.append(v)
        return v

    run_search(NSGA2Config(generations=gens, seed=seed, blocks=problem.blocks, ratios=problem.ratios,
                           **operators), evaluate)
    return evals


def ours(seed: int, budget: int, problem: Problem = TOY) -> list[dict]:
    """Our NSGA-II with its defaults (paper settings + gene crossover, per-layer p_m)."""
    return _ours(seed, budget, problem)


def ours_v1(seed: int, budget: int, problem: Problem = TOY) -> list[dict]:
    """Our NSGA-II with the operators before the change (layer crossover, per-gene p_m, no retries)."""
    return _ours(seed, budget, problem, **V1_OPERATORS)


def random_search(seed: int, budget: int, problem: Problem = TOY) -> list[dict]:
    rng = np.random.default_rng(seed)
    space = problem.space
    seen: dict[str, dict] = {}
    while len(seen) < budget:
        k = Architecture.key_of(random_genome(rng, space))
        if k not in seen:
            seen[k] = problem.evaluate(Architecture.from_key(k))
    return list(seen.values())


def _arch_from_vector(x: np.ndarray, allowed: list[list[int]], ratios: list[float]) -> Architecture:
    """pymoo's integer vector (16 block indices, then 16 ratio indices, into the candidates) -> architecture."""
    x = np.asarray(np.round(x), dtype=int)
    return Architecture(tuple(allowed[i][x[i]] for i in range(NUM_LAYERS)),
                        tuple(ratios[x[NUM_LAYERS + i]] for i in range(NUM_LAYERS)))


def pymoo_nsga2(seed: int, budget: int, problem: Problem = TOY) -> list[dict]:
    from pymoo.algorithms.moo.nsga2 import NSGA2
    from pymoo.core.problem import Problem as PymooProblem
    from pymoo.operators.crossover.sbx import SBX
    from pymoo.operators.mutation.pm import PM
    from pymoo.operators.repair.rounding import RoundingRepair
    from pymoo.operators.sampling.rnd import IntegerRandomSampling
    from pymoo.optimize import minimize

    evals: list[dict] = []
    allowed, ratios = problem.layer_blocks, problem.ratio_values

    class TamNas(PymooProblem):
        def __init__(self) -> None:
            xu = [len(a) - 1 for a in allowed] + [len(ratios) - 1] * NUM_LAYERS
            super().__init__(n_var=2 * NUM_LAYERS, n_obj=3, xl=0, xu=np.array(xu), vtype=int)

        def _evaluate(self, X, out, *args, **kwargs):
            rows = []
            for x in X:
                v = problem.evaluate(_arch_from_vector(x, allowed, ratios))
                evals.append(v)
                rows.append([-v["adv_acc"], -v["clean_acc"], v["params"] / PARAMS_SCALE])
            out["F"] = np.array(rows)

    # pymoo's documented recipe for integer variables.
    algo = NSGA2(pop_size=50, n_offsprings=50, sampling=IntegerRandomSampling(),
                 crossover=SBX(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
                 mutation=PM(prob=1.0, eta=3.0, vtype=float, repair=RoundingRepair()),
                 eliminate_duplicates=True)
    minimize(TamNas(), algo, ("n_evals", budget), seed=seed, verbose=False)
    return evals[:budget]


def optuna_nsga2(seed: int, budget: int, problem: Problem = TOY) -> list[dict]:
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    evals: list[dict] = []
    allowed = [tuple(a) for a in problem.layer_blocks]
    ratios = tuple(problem.ratio_values)

    def objective(trial):
        arch = Architecture(tuple(trial.suggest_categorical(f"layer_{i}", allowed[i]) for i in range(NUM_LAYERS)),
                            tuple(trial.suggest_categorical(f"ratio_{i}", ratios) for i in range(NUM_LAYERS)))
        v = problem.evaluate(arch)
        evals.append(v)
        return v["adv_acc"], v["clean_acc"], v["params"]

    study = optuna.create_study(directions=["maximize", "maximize", "minimize"],
                                sampler=optuna.samplers.NSGAIISampler(population_size=50, seed=seed))
    study.optimize(objective, n_trials=budget)
    return evals


# --------------------------------------------------------------------------- table mode
@contextlib.contextmanager
def _one_blas_thread() -> Iterator[None]:
    """BLAS on one thread: the ~100 x 100 solves of the surrogate run >10x slower multi-threaded
    on a loaded machine (OpenBLAS threads waiting for busy cores)."""
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # optional (comes with scikit-learn)
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield


class AdditiveSurrogate:
    """Ridge regression on one-hot genes: ``y ≈ c + Σ_i w_block[i, b_i] + w_ratio[i, r_i]``.

    Features are, per layer, one column per candidate block of ``space`` and one per candidate
    ratio; the intercept is not penalised (centred fit). ``alpha`` is the ridge penalty (the
    one-hot columns are collinear with the intercept, so some is needed; small, relative to
    the ~n / candidates rows that set each column).
    """

    def __init__(self, space: GeneSpace, alpha: float = 0.1) -> None:
        self.space, self.alpha = space, float(alpha)
        self._block_col: list[dict[int, int]] = []
        self._ratio_col: list[dict[int, int]] = []
        d = 0
        for cand in space.blocks:
            self._block_col.append({int(b): d + j for j, b in enumerate(cand)})
            d += len(cand)
            self._ratio_col.append({int(r): d + j for j, r in enumerate(space.ratios)})
            d += len(space.ratios)
        self.n_features = d
        self.coef = np.zeros(d)
        self.intercept = 0.0

    def features(self, genomes: np.ndarray) -> np.ndarray:
        """``(n, 16, 2)`` genomes -> ``(n, n_features)`` one-hot matrix; ``ValueError`` outside the space."""
        G = np.asarray(genomes, dtype=np.int64).reshape(-1, NUM_LAYERS, 2)
        X = np.zeros((len(G), self.n_features))
        rows = np.arange(len(G))
        try:
            for i in range(NUM_LAYERS):
                X[rows, [self._block_col[i][int(b)] for b in G[:, i, 0]]] = 1.0
                X[rows, [self._ratio_col[i][int(r)] for r in G[:, i, 1]]] = 1.0
        except KeyError as e:
            raise ValueError(f"layer {i}: gene {e.args[0]} is not a candidate of the surrogate's space") from None
        return X

    def fit(self, genomes: np.ndarray, y: np.ndarray) -> AdditiveSurrogate:
        X, y = self.features(genomes), np.asarray(y, dtype=float)
        xm, ym = X.mean(axis=0), y.mean()
        Xc = X - xm
        with _one_blas_thread():
            self.coef = np.linalg.solve(Xc.T @ Xc + self.alpha * np.eye(self.n_features), Xc.T @ (y - ym))
        self.intercept = float(ym - xm @ self.coef)
        return self

    def predict(self, genomes: np.ndarray) -> np.ndarray:
        return self.features(genomes) @ self.coef + self.intercept

    def predict_one(self, genome: np.ndarray) -> float:
        """Fast path for one ``(16, 2)`` genome."""
        w = self.coef
        return self.intercept + float(sum(w[self._block_col[i][int(b)]] + w[self._ratio_col[i][int(r)]]
                                          for i, (b, r) in enumerate(genome)))


def r2_score(y: np.ndarray, pred: np.ndarray) -> float:
    y, pred = np.asarray(y, dtype=float), np.asarray(pred, dtype=float)
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return 1.0 - float(np.sum((y - pred) ** 2)) / ss_tot if ss_tot > 0 else float("nan")


def cross_val_r2(genomes: np.ndarray, y: np.ndarray, space: GeneSpace, alpha: float = 0.1, folds: int = 5,
                 seed: int = 0) -> float:
    """R^2 of the pooled out-of-fold predictions (clipped to [0, 1]) of a ``folds``-fold split
    (rows shuffled by ``default_rng(seed)``); NaN below two rows per fold."""
    y = np.asarray(y, dtype=float)
    if len(y) < 2 * folds:
        return float("nan")
    pred = np.empty_like(y)
    for test in np.array_split(np.random.default_rng(seed).permutation(len(y)), folds):
        train = np.setdiff1d(np.arange(len(y)), test)
        pred[test] = AdditiveSurrogate(space, alpha).fit(genomes[train], y[train]).predict(genomes[test])
    return r2_score(y, np.clip(pred, 0.0, 1.0))


@dataclass(frozen=True)
class EvalTable:
    """A table of real evaluations (:mod:`benchmarks.real_evals`) and the subset it covers."""

    keys: tuple[str, ...]
    genomes: np.ndarray  # (n, 16, 2)
    values: dict[str, np.ndarray]  # clean_acc, adv_acc, params
    blocks: tuple[int, ...] | None
    ratios: tuple[float, ...] | None
    space_config: SpaceConfig
    subset_from: str  # "sidecar" | "table"

    @property
    def space(self) -> GeneSpace:
        return GeneSpace.build(self.blocks, self.ratios)


def load_table(path: str | Path) -> EvalTable:
    """Read a table and its sidecar (``<table>.json``, optional).

    The subset is the sidecar's ``blocks`` / ``ratios``; without a sidecar, the blocks and
    ratios that occur in the table. The space is the sidecar's, else Fashion-MNIST width 1.
    ``ValueError`` if a row is outside the subset, a key repeats, or a parameter count differs
    from the parameter table of the space (a table of another space).
    """
    path = Path(path)
    rows = read_table(path)
    if not rows:
        raise ValueError(f"{path}: no rows")
    keys = tuple(r["arch"] for r in rows)
    if len(set(keys)) != len(keys):
        raise ValueError(f"{path}: repeated architecture keys")
    genomes = np.stack([Architecture.from_key(k).genome for k in keys])
    side = sidecar_path(path)
    meta = json.loads(side.read_text()) if side.exists() else {}
    if "blocks" in meta and "ratios" in meta:
        blocks = tuple(meta["blocks"]) if meta["blocks"] is not None else None
        ratios = tuple(meta["ratios"]) if meta["ratios"] is not None else None
        subset_from = "sidecar"
    else:
        blocks = tuple(sorted({int(b) for b in genomes[:, :, 0].ravel()}))
        ratios = tuple(RATIOS[r] for r in sorted({int(r) for r in genomes[:, :, 1].ravel()}))
        subset_from = "table"
    space_config = (SpaceConfig.from_dict(meta["space"], f"{side}: space") if "space" in meta
                    else SpaceConfig.for_dataset("fashion_mnist", 1))
    table = EvalTable(keys, genomes, {name: np.array([r[name] for r in rows], dtype=float)
                                      for name in (*ACCURACIES, "params")},
                      blocks, ratios, space_config, subset_from)
    gene_space = table.space
    for k, g in zip(keys, genomes, strict=True):
        if not gene_space.contains(g):
            raise ValueError(f"{path}: {k} is outside the subset blocks {blocks}, ratios {ratios}")
    exact = np.array([count_params(Architecture.from_key(k), space_config) for k in keys], dtype=float)
    bad = np.flatnonzero(exact != table.values["params"])
    if bad.size:
        raise ValueError(f"{path}: {bad.size} parameter counts differ from the {space_config.dataset} width-"
                         f"{space_config.width_multiplier} parameter table (first: {keys[bad[0]]}: "
                         f"{table.values['params'][bad[0]]:.0f} vs {exact[bad[0]]:.0f})")
    return table


def table_problem(table: EvalTable, alpha: float = 0.1, folds: int = 5) -> tuple[Problem, dict[str, Any]]:
    """The :class:`Problem` of a table (real numbers where the table has them, else the
    surrogate) and a summary: rows, subset, alpha and the surrogate's cross-validated R^2."""
    space = table.space
    models = {name: AdditiveSurrogate(space, alpha).fit(table.genomes, table.values[name]) for name in ACCURACIES}
    known = {k: {name: float(table.values[name][i]) for name in ACCURACIES} for i, k in enumerate(table.keys)}
    cfg = table.space_config

    def evaluate(arch: Architecture) -> dict:
        key = arch.key
        g = Architecture.from_key(key).genome
        if not space.contains(g):  # a method left the subset: the comparison would be unfair
            raise ValueError(f"{key} is outside the table's subset")
        real = known.get(key)
        acc = real if real is not None else {
            name: min(max(models[name].predict_one(g), 0.0), 1.0) for name in ACCURACIES}
        return {**acc, "params": float(count_params(arch, cfg)), "key": key, "from_table": real is not None}

    info = {"rows": len(table.keys), "blocks": list(table.blocks) if table.blocks is not None else None,
            "ratios": list(table.ratios) if table.ratios is not None else None, "subset_from": table.subset_from,
            "space": cfg.to_dict(), "alpha": alpha, "folds": folds,
            "cv_r2": {name: cross_val_r2(table.genomes, table.values[name], space, alpha, folds)
                      for name in ACCURACIES},
            "params_scale": PARAMS_SCALE, "reference_point": REFERENCE_POINT,
            "table_hypervolume": hypervolume_of(
                [{name: float(table.values[name][i]) for name in (*ACCURACIES, "params")}
                 for i in range(len(table.keys))], DEFAULT_OBJECTIVES)}
    return Problem(evaluate, table.blocks, table.ratios), info


OURS = "ours (NSGA-II, defaults)"
METHODS: dict[str, Callable[..., list[dict]]] = {
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
    p.add_argument("--table", help="CSV of real evaluations (python -m benchmarks.real_evals) instead of the toy "
                                   "problem")
    p.add_argument("--alpha", type=float, default=0.1, help="ridge penalty of the table's surrogate (default 0.1)")
    p.add_argument("--folds", type=int, default=5, help="cross-validation folds of the surrogate's R^2 (default 5)")
    args = p.parse_args(argv)
    if args.budget < 50 or (args.budget - 50) % 50:
        p.error("--budget: expected 50 + k * 50 (population 50, offspring 50 per generation)")
    logging.basicConfig(level=logging.WARNING)
    report: dict[str, Any] = {"budget": args.budget, "seeds": args.seeds, "methods": {}}
    problem = TOY
    if args.table:
        try:
            problem, report["table"] = table_problem(load_table(args.table), args.alpha, args.folds)
        except (OSError, ValueError) as e:
            p.error(f"--table: {e}")
        report["table"]["path"] = args.table
    for name in args.methods:
        hvs, t_total, n_total, hits = [], 0.0, 0, 0
        for seed in range(args.seeds):
            t0 = time.perf_counter()
            evals = METHODS[name](seed, args.budget, problem)
            t_total += time.perf_counter() - t0
            if len(evals) != args.budget:  # equal budgets or the comparison means nothing
                raise RuntimeError(f"{name}, seed {seed}: {len(evals)} evaluations, budget {args.budget}")
            n_total += len(evals)
            hits += sum(bool(v.get("from_table")) for v in evals)
            hvs.append(hypervolume_of(evals, DEFAULT_OBJECTIVES))
        q = np.quantile(hvs, [0.25, 0.75])
        report["methods"][name] = {"median": statistics.median(hvs), "iqr": [float(q[0]), float(q[1])],
                                   "min": min(hvs), "max": max(hvs),
                                   "seconds_per_1000": 1000 * t_total / n_total, "hypervolumes": hvs}
        if args.table:
            report["methods"][name]["table_share"] = hits / n_total
    peers = [m for m in PEERS if m in report["methods"]]
    if OURS in report["methods"] and peers:
        best = max(peers, key=lambda m: report["methods"][m]["median"])
        report["best_peer"] = best
        report["gap_vs_best_peer"] = report["methods"][OURS]["median"] - report["methods"][best]["median"]
        report["gap_interval_95"] = median_gap_interval(report["methods"][OURS]["hypervolumes"],
                                                        report["methods"][best]["hypervolumes"])
    if args.json:
        print(json.dumps(report, indent=1))
        return 0
    if args.table:
        t = report["table"]
        print(f"table {args.table}: {t['rows']} real evaluations; subset ({t['subset_from']}) blocks {t['blocks']}, "
              f"ratios {t['ratios']}")
        print(f"other architectures: additive ridge surrogate (alpha {t['alpha']:g}), {t['folds']}-fold CV R^2 "
              f"clean_acc {t['cv_r2']['clean_acc']:.3f}, adv_acc {t['cv_r2']['adv_acc']:.3f}; params exact")
        print(f"hypervolume: errors, params / {PARAMS_SCALE:.3g}, reference {REFERENCE_POINT}; "
              f"the table's own rows: {t['table_hypervolume']:.4f}")
    print(f"budget {args.budget} evaluations, {args.seeds} seeds; hypervolume of all evaluations")
    extra = f" {'table':>6s}" if args.table else ""
    print(f"{'method':34s} {'median':>8s} {'IQR':>19s} {'min':>8s} {'max':>8s} {'s/1000':>8s}{extra}")
    for name, r in report["methods"].items():
        extra = f" {100 * r['table_share']:5.1f}%" if args.table else ""
        print(f"{name:34s} {r['median']:8.4f} [{r['iqr'][0]:.4f}, {r['iqr'][1]:.4f}] {r['min']:8.4f} "
              f"{r['max']:8.4f} {r['seconds_per_1000']:8.2f}{extra}")
    if "best_peer" in report:
        lo, hi = report["gap_interval_95"]
        print(f"ours - {report['best_peer']} (median): {report['gap_vs_best_peer']:+.4f}, "
              f"bootstrap 95% [{lo:+.4f}, {hi:+.4f}]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
