"""NSGA-II over TAM-NAS architectures (paper §III-E, Algorithm 2; Deb et al. 2002).

The algorithm is a set of small pure functions over objective matrices and genomes, plus
:class:`NSGA2Search`, an ask/tell state machine that the NNI tuner
(:mod:`strategies.tuner`) and the in-process runner (:mod:`strategies.runner`) share.

Conventions
-----------
- An objective matrix ``F`` (n points x m objectives) is always *minimised*; maximised
  objectives are negated by :func:`objective_matrix`.
- A genome is an int array of shape ``(16, 2)``: column 0 the block id (Table XIV), column 1
  the ratio id (Table XV), exactly :attr:`search_space.encoding.Architecture.genes`.
- The genes a search may use are a :class:`GeneSpace`: per layer the candidate block ids,
  and the candidate ratio ids; by default all of them (:data:`DEFAULT_SPACE`), or a subset
  chosen with :attr:`NSGA2Config.blocks` / :attr:`NSGA2Config.ratios` (e.g. the blocks and
  ratios a quick supernet trained). Every operator keeps genomes inside it.
- Every random choice comes from a ``numpy.random.Generator``. The generator of generation
  ``g`` is ``default_rng([seed, g])`` and a generation's proposals are all drawn when it
  starts, so the proposals do not depend on the order in which results arrive (the tuner's
  concurrency) — the tuner and the in-process runner give the same front.

No torch here (DESIGN §2).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import numpy as np

from search_space.encoding import (
    DEFAULT_OBJECTIVES,
    NUM_LAYERS,
    RATIOS,
    STRIDE2_LAYERS,
    Architecture,
    Objective,
    allowed_blocks,
    block_subset,
    candidate_blocks,
    ratio_subset,
)

from .hypervolume import DEFAULT_BOUNDS, hypervolume_of

_logger = logging.getLogger(__name__)

STATE_FORMAT = "tamnas-nsga2-state"
STATE_VERSION = 2
# Operator settings that version-1 states (written before these keys existed) ran with.
V1_OPERATORS = {"crossover_unit": "layer", "mutation_unit": "gene", "duplicate_retries": 0}
_UNITS = ("layer", "gene")

_ALLOWED = [np.asarray(allowed_blocks(i), dtype=np.int64) for i in range(NUM_LAYERS)]
_NUM_RATIOS = len(RATIOS)


# --------------------------------------------------------------------------- gene space
def _frozen(a: Any) -> np.ndarray:
    a = np.array(a, dtype=np.int64)
    a.setflags(write=False)
    return a


@dataclass(frozen=True, eq=False)
class GeneSpace:
    """The genes the operators may produce: ``blocks[i]`` the candidate block ids of layer ``i``
    and ``ratios`` the candidate ratio ids (Table XV), both ascending, read-only arrays.

    Build one with :meth:`build` (validated); :data:`DEFAULT_SPACE` is the whole encoding.
    """

    blocks: tuple[np.ndarray, ...]
    ratios: np.ndarray

    @classmethod
    def build(cls, blocks: Sequence[int] | None = None, ratios: Sequence[float] | None = None) -> GeneSpace:
        """Gene space of a block-id subset and a ratio subset (``None``: all); ``ValueError`` if a
        value is not in the encoding or a layer is left without a candidate block."""
        blocks = block_subset(blocks)
        ratios = ratio_subset(ratios)
        if blocks is None and ratios is None:
            return DEFAULT_SPACE
        return _build_space(blocks, ratios)

    def contains(self, g: np.ndarray) -> bool:
        """Whether every gene of genome ``g`` is a candidate."""
        return all(g[i, 0] in self.blocks[i] for i in range(NUM_LAYERS)) and bool(np.isin(g[:, 1], self.ratios).all())


@lru_cache(maxsize=32)
def _build_space(blocks: tuple[int, ...] | None, ratios: tuple[float, ...] | None) -> GeneSpace:
    per_layer = [_frozen(candidate_blocks(i, blocks)) for i in range(NUM_LAYERS)]
    ratio_ids = range(_NUM_RATIOS) if ratios is None else sorted(RATIOS.index(r) for r in ratios)
    return GeneSpace(tuple(per_layer), _frozen(list(ratio_ids)))


DEFAULT_SPACE = GeneSpace(tuple(_frozen(a) for a in _ALLOWED), _frozen(np.arange(_NUM_RATIOS)))


# --------------------------------------------------------------------------- sorting
def dominates_matrix(F: np.ndarray) -> np.ndarray:
    """``D[i, j]`` is True when point ``i`` Pareto-dominates point ``j`` (minimisation)."""
    F = np.asarray(F, dtype=float)
    le = np.all(F[:, None, :] <= F[None, :, :], axis=2)
    lt = np.any(F[:, None, :] < F[None, :, :], axis=2)
    return le & lt


def fast_non_dominated_sort(F: np.ndarray) -> list[np.ndarray]:
    """Fronts of ``F`` (minimisation), best first, each an ascending index array.

    Deb et al., "A fast and elitist multiobjective genetic algorithm: NSGA-II" (2002), §III-A.
    Identical points do not dominate each other, so duplicates share a front.
    """
    F = np.asarray(F, dtype=float)
    n = len(F)
    if n == 0:
        return []
    dom = dominates_matrix(F)
    dominated_by = dom.sum(axis=0)  # how many points dominate each point
    fronts: list[np.ndarray] = []
    current = np.flatnonzero(dominated_by == 0)
    while current.size:
        fronts.append(current)
        dominated_by = dominated_by - dom[current].sum(axis=0)
        dominated_by[current] = -1  # already assigned
        current = np.flatnonzero(dominated_by == 0)
    return fronts


def non_dominated_ranks(F: np.ndarray) -> np.ndarray:
    """Front number (0 = non-dominated) of every point of ``F``."""
    ranks = np.full(len(F), -1, dtype=np.int64)
    for r, front in enumerate(fast_non_dominated_sort(F)):
        ranks[front] = r
    return ranks


def crowding_distance(F: np.ndarray) -> np.ndarray:
    """Crowding distance of the points of one front (Deb et al. 2002, §III-B).

    Boundary points get ``inf``; an interior point gets the side lengths of its cuboid,
    each normalised by the objective's range and averaged over objectives. Fronts of at most
    two points are all ``inf``.

    # NOTE: follows pymoo's conventions so both rank the same: ties are sorted stably,
    # so of two identical points one may be interior with distance 0; an objective that is
    # constant on the front contributes 0 (also at the boundary) instead of ``inf``.
    """
    F = np.asarray(F, dtype=float)
    n, m = F.shape
    if n <= 2:
        return np.full(n, np.inf)
    order = np.argsort(F, axis=0, kind="mergesort")
    Fs = np.take_along_axis(F, order, axis=0)
    span = Fs[-1] - Fs[0]
    gap_prev = np.vstack([np.full(m, np.inf), np.diff(Fs, axis=0)])
    gap_next = np.vstack([np.diff(Fs, axis=0), np.full(m, np.inf)])
    with np.errstate(invalid="ignore", divide="ignore"):
        contrib = np.where(span > 0, (gap_prev + gap_next) / np.where(span > 0, span, 1.0), 0.0)
    dist = np.zeros((n, m))
    np.put_along_axis(dist, order, contrib, axis=0)
    return dist.sum(axis=1) / m


def rank_and_crowding(F: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Front rank and within-front crowding distance of every point."""
    n = len(F)
    ranks = np.zeros(n, dtype=np.int64)
    crowd = np.zeros(n)
    for r, front in enumerate(fast_non_dominated_sort(F)):
        ranks[front] = r
        crowd[front] = crowding_distance(np.asarray(F)[front])
    return ranks, crowd


def survival_select(F: np.ndarray, n_survive: int) -> np.ndarray:
    """Elitist environmental selection of NSGA-II (Algorithm 2, lines 15-25).

    Whole fronts are taken while they fit; the front that does not fit is cut by crowding
    distance, largest first. Ties keep the input order, so the result is deterministic.
    Returns indices into ``F`` ordered by (rank, -crowding, index).
    """
    F = np.asarray(F, dtype=float)
    chosen: list[int] = []
    for front in fast_non_dominated_sort(F):
        if len(chosen) >= n_survive:
            break
        cd = crowding_distance(F[front])
        order = sorted(range(len(front)), key=lambda i: (-cd[i], front[i]))
        chosen.extend(int(front[i]) for i in order[: n_survive - len(chosen)])
    return np.asarray(chosen, dtype=np.int64)


def tournament_select(ranks: np.ndarray, crowd: np.ndarray, size: int, rng: np.random.Generator,
                      exclude: int | None = None) -> int:
    """Index of the winner of one tournament of ``size`` entrants (paper: 10).

    Entrants are drawn without replacement (capped at the population); the winner has the
    lowest rank, then the largest crowding distance (crowded-comparison operator, Deb et al.).
    ``exclude`` keeps the first parent out of the second tournament when possible.
    """
    pool = np.arange(len(ranks))
    if exclude is not None and len(pool) > 1:
        pool = pool[pool != exclude]
    entrants = rng.choice(pool, size=min(size, len(pool)), replace=False)
    return int(min(entrants, key=lambda i: (ranks[i], -crowd[i], i)))


# --------------------------------------------------------------------------- operators
def random_genome(rng: np.random.Generator, space: GeneSpace = DEFAULT_SPACE) -> np.ndarray:
    """A uniformly random genome of ``space`` (which respects the stride-2 rule)."""
    g = np.empty((NUM_LAYERS, 2), dtype=np.int64)
    for i in range(NUM_LAYERS):
        g[i, 0] = space.blocks[i][rng.integers(len(space.blocks[i]))]
        g[i, 1] = space.ratios[rng.integers(len(space.ratios))]
    return g


def crossover(a: np.ndarray, b: np.ndarray, rng: np.random.Generator, prob: float = 0.9,
              unit: str = "gene") -> tuple[np.ndarray, np.ndarray]:
    """Uniform crossover (paper §III-E1); the second child takes what the first did not.

    Parameters
    ----------
    a, b : ndarray
        Parent genomes, shape ``(16, 2)``.
    rng : numpy.random.Generator
    prob : float
        Crossover probability ``p_c``; with probability ``1 - prob`` the children are copies.
    unit : {"gene", "layer"}
        ``"gene"``: each layer's block and its ratio are inherited independently (the paper
        "inherits and recombines the block or channel from the two parents");
        ``"layer"``: a layer's block and ratio come together from one parent.

    Both units keep the stride-2 rule and a :class:`GeneSpace`: every gene comes from a
    parent at the same layer.
    """
    if rng.random() >= prob:
        return a.copy(), b.copy()
    shape = (NUM_LAYERS, 2) if unit == "gene" else (NUM_LAYERS, 1)
    take_a = rng.random(shape) < 0.5
    c1 = np.where(take_a, a, b)
    c2 = np.where(take_a, b, a)
    return c1, c2


def _redraw_block(g: np.ndarray, i: int, rng: np.random.Generator, space: GeneSpace) -> None:
    """Uniform over the layer's other candidate blocks; unchanged if there is none."""
    choices = space.blocks[i][space.blocks[i] != g[i, 0]]
    if choices.size:
        g[i, 0] = choices[rng.integers(len(choices))]


def _redraw_ratio(g: np.ndarray, i: int, rng: np.random.Generator, space: GeneSpace) -> None:
    """Uniform over the other candidate ratios (all nine others by default); unchanged if none."""
    cand = space.ratios
    pos = int(np.searchsorted(cand, g[i, 1]))
    if pos < len(cand) and cand[pos] == g[i, 1]:  # skip the current ratio
        if len(cand) > 1:
            r = rng.integers(len(cand) - 1)
            g[i, 1] = cand[r if r < pos else r + 1]
    else:  # a ratio outside the space: any candidate differs
        g[i, 1] = cand[rng.integers(len(cand))]


def mutate(g: np.ndarray, rng: np.random.Generator, prob: float = 0.1, unit: str = "layer",
           space: GeneSpace = DEFAULT_SPACE) -> np.ndarray:
    """Mutation (paper §III-E2): re-draw a block or ratio as a *different* candidate of ``space``.

    Parameters
    ----------
    g : ndarray
        Genome, shape ``(16, 2)``; not modified.
    rng : numpy.random.Generator
    prob : float
        Mutation probability ``p_m`` (paper: 0.1).
    unit : {"layer", "gene"}
        ``"layer"``: each *layer* mutates with probability ``prob``, and a mutated layer
        changes its block, its ratio or both (one third each) — about 1.6 changed layers per
        child at 0.1. ``"gene"``: each of the 32 block and ratio genes mutates with
        probability ``prob`` (about 3.2 changed genes per child at 0.1).
    space : GeneSpace
        Candidate genes; a gene whose layer has a single candidate is left unchanged.

    Notes
    -----
    The default ``"layer"`` is our reading of §III-E2: "the subnet has 10% opportunity to
    change the block or the channel number", with p = 0.1 chosen "to prohibit creating
    completely different network architectures". Per gene, 0.1 changes ~3.2 of 32 genes per
    child; per layer ~2.1 genes in ~1.6 layers, closer to that intent (and to the common
    1/n rule, ~1 gene). Measured on the toy benchmark: BENCHMARKS.md, "Search quality".
    """
    g = g.copy()
    if unit == "gene":
        flips = rng.random((NUM_LAYERS, 2)) < prob
        for i in np.flatnonzero(flips[:, 0]):
            _redraw_block(g, i, rng, space)
        for i in np.flatnonzero(flips[:, 1]):
            _redraw_ratio(g, i, rng, space)
        return g
    for i in np.flatnonzero(rng.random(NUM_LAYERS) < prob):
        what = rng.integers(3)  # 0: block, 1: ratio, 2: both
        if what != 1:
            _redraw_block(g, i, rng, space)
        if what != 0:
            _redraw_ratio(g, i, rng, space)
    return g


def repair_stride2(g: np.ndarray, rng: np.random.Generator, space: GeneSpace = DEFAULT_SPACE) -> np.ndarray:
    """Replace a pure robust block (18-21), or a block outside ``space``, in a stride-2 layer by
    a random candidate block of that layer.

    The operators above never create one; this guards genomes from elsewhere (paper
    §III-E1: non-local blocks cannot sit in stride-2 layers)."""
    g = g.copy()
    for i in STRIDE2_LAYERS:
        if g[i, 0] not in space.blocks[i]:
            g[i, 0] = space.blocks[i][rng.integers(len(space.blocks[i]))]
    return g


def repair_param_range(g: np.ndarray, params_fn: Callable[[Architecture], float],
                       param_range: tuple[float, float], rng: np.random.Generator,
                       max_steps: int = 200, space: GeneSpace = DEFAULT_SPACE) -> np.ndarray | None:
    """Move a genome into ``[low, high]`` parameters by changing ratios one step at a time.

    Too large: a random layer whose ratio can shrink takes the next smaller candidate ratio
    of ``space``; too small: one grows to the next larger. When ratios are exhausted a random
    layer's block is re-drawn from its candidates. Returns ``None`` if ``max_steps`` are not
    enough (the caller then proposes another child).
    """
    low, high = param_range
    g = g.copy()
    cand = space.ratios
    for _ in range(max_steps + 1):
        p = params_fn(genome_to_arch(g))
        if low <= p <= high:
            return g
        if p > high:
            target = np.searchsorted(cand, g[:, 1], side="left") - 1  # next smaller candidate
            movable = np.flatnonzero(target >= 0)
        else:
            target = np.searchsorted(cand, g[:, 1], side="right")  # next larger candidate
            movable = np.flatnonzero(target < len(cand))
        if movable.size:
            i = movable[rng.integers(movable.size)]
            g[i, 1] = cand[target[i]]
        else:
            i = int(rng.integers(NUM_LAYERS))
            g[i, 0] = space.blocks[i][rng.integers(len(space.blocks[i]))]
    return None


# --------------------------------------------------------------------------- genome <-> architecture
def genome_to_arch(g: np.ndarray) -> Architecture:
    return Architecture.from_genes(g.tolist())


def arch_to_genome(arch: Architecture) -> np.ndarray:
    return np.asarray(arch.genes, dtype=np.int64)


def genome_key(g: np.ndarray) -> str:
    """Same string as :attr:`Architecture.key`, without building the architecture."""
    return "-".join(f"{int(b)}:{int(r)}" for b, r in g)


def key_to_genome(key: str) -> np.ndarray:
    return np.asarray([[int(x) for x in layer.split(":")] for layer in key.split("-")], dtype=np.int64)


def key_to_arch(key: str) -> Architecture:
    return genome_to_arch(key_to_genome(key))


# --------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class NSGA2Config:
    """Settings of one search; defaults are the paper's (§IV-A2).

    ``generations`` counts offspring generations after the initial population, so the
    evaluation budget is ``population_size + generations * offspring_size`` (paper:
    50 + 20 x 50). ``hv_bounds`` maps an objective name to the ``(low, high)`` range used to
    normalise it for the hypervolume (see :mod:`strategies.hypervolume`).

    ``crossover_unit`` and ``mutation_unit`` (``"gene"`` or ``"layer"``) choose how
    :func:`crossover` and :func:`mutate` read the paper; ``mutation_prob`` is per unit.
    ``duplicate_retries``: a child that was already proposed is mutated again up to this many
    times before new parents are drawn (0: draw new parents at once).

    ``blocks`` / ``ratios`` restrict the search to a subset of the space: block ids of
    Table XIV and ratios of Table XV (e.g. those a quick supernet trained); ``None`` (default)
    is all of them. Per layer the candidates are ``allowed_blocks(i)`` ∩ ``blocks``, so a
    subset must leave the stride-2 layers a block that is not pure robust. Both are stored
    sorted; :attr:`gene_space` is the resulting :class:`GeneSpace`.
    """

    population_size: int = 50
    offspring_size: int = 50
    generations: int = 20
    tournament_size: int = 10
    crossover_prob: float = 0.9  # NOTE: the paper names p_c but not its value; Deb et al. use 0.9
    mutation_prob: float = 0.1
    # Operator details the paper leaves open; defaults chosen by the 50-seed benchmark
    # (BENCHMARKS.md, "Search quality"); V1_OPERATORS restores the earlier behaviour.
    crossover_unit: str = "gene"
    mutation_unit: str = "layer"
    duplicate_retries: int = 10
    seed: int | None = None
    objectives: tuple[Objective, ...] = DEFAULT_OBJECTIVES
    param_range: tuple[float, float] | None = None
    hv_bounds: Mapping[str, tuple[float, float]] = field(default_factory=dict)
    blocks: tuple[int, ...] | None = None
    ratios: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        def check(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(msg)

        for name in ("crossover_unit", "mutation_unit"):
            check(getattr(self, name) in _UNITS, f"{name}: expected one of {list(_UNITS)}, got {getattr(self, name)!r}")
        check(isinstance(self.duplicate_retries, int) and not isinstance(self.duplicate_retries, bool)
              and self.duplicate_retries >= 0,
              f"duplicate_retries: expected an integer >= 0, got {self.duplicate_retries!r}")
        for name in ("population_size", "offspring_size", "tournament_size"):
            v = getattr(self, name)
            check(isinstance(v, int) and not isinstance(v, bool) and v >= 1,
                  f"{name}: expected an integer >= 1, got {v!r}")
        check(isinstance(self.generations, int) and not isinstance(self.generations, bool) and self.generations >= 0,
              f"generations: expected an integer >= 0, got {self.generations!r}")
        for name in ("crossover_prob", "mutation_prob"):
            v = getattr(self, name)
            check(isinstance(v, (int, float)) and 0.0 <= v <= 1.0, f"{name}: expected a number in [0, 1], got {v!r}")
        check(self.seed is None or (isinstance(self.seed, int) and not isinstance(self.seed, bool) and self.seed >= 0),
              f"seed: expected a non-negative integer or null, got {self.seed!r}")
        objs = tuple(self.objectives)
        check(len(objs) >= 2, f"objectives: need at least two objectives, got {[o.name for o in objs]}")
        check(len({o.name for o in objs}) == len(objs), f"objectives: duplicate names in {[o.name for o in objs]}")
        object.__setattr__(self, "objectives", objs)
        bounds = {**{k: v for k, v in DEFAULT_BOUNDS.items()}, **dict(self.hv_bounds)}
        for o in objs:
            check(o.name in bounds, f"hv_bounds: objective {o.name!r} has no normalisation range; "
                                    f"give hv_bounds: {{{o.name!r}: [low, high]}}")
            lo, hi = bounds[o.name]
            check(float(hi) > float(lo), f"hv_bounds.{o.name}: need low < high, got {[lo, hi]}")
        object.__setattr__(self, "hv_bounds", {o.name: (float(bounds[o.name][0]), float(bounds[o.name][1]))
                                               for o in objs})
        if self.param_range is not None:
            pr = tuple(self.param_range)
            check(len(pr) == 2 and all(isinstance(x, (int, float)) for x in pr) and 0 <= pr[0] <= pr[1],
                  f"param_range: expected [low, high] with 0 <= low <= high, got {self.param_range!r}")
            object.__setattr__(self, "param_range", (float(pr[0]), float(pr[1])))
        object.__setattr__(self, "blocks", block_subset(self.blocks))
        object.__setattr__(self, "ratios", ratio_subset(self.ratios))
        GeneSpace.build(self.blocks, self.ratios)  # a layer left without a candidate block is an error

    @property
    def gene_space(self) -> GeneSpace:
        """The genes this search may propose (:data:`DEFAULT_SPACE` without a subset)."""
        return GeneSpace.build(self.blocks, self.ratios)

    @property
    def budget(self) -> int:
        """Evaluations of a full run without failures or exhausted proposals."""
        return self.population_size + self.generations * self.offspring_size

    def to_dict(self) -> dict[str, Any]:
        return {"population_size": self.population_size, "offspring_size": self.offspring_size,
                "generations": self.generations, "tournament_size": self.tournament_size,
                "crossover_prob": self.crossover_prob, "mutation_prob": self.mutation_prob,
                "crossover_unit": self.crossover_unit, "mutation_unit": self.mutation_unit,
                "duplicate_retries": self.duplicate_retries,
                "seed": self.seed, "objectives": [{"name": o.name, "direction": o.direction}
                                                  for o in self.objectives],
                "param_range": list(self.param_range) if self.param_range else None,
                "hv_bounds": {k: list(v) for k, v in self.hv_bounds.items()},
                "blocks": list(self.blocks) if self.blocks is not None else None,
                "ratios": list(self.ratios) if self.ratios is not None else None}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NSGA2Config:
        d = dict(d)
        if "objectives" in d:
            d["objectives"] = parse_objectives(d["objectives"])
        if d.get("hv_bounds") is not None:
            d["hv_bounds"] = {k: tuple(v) for k, v in d["hv_bounds"].items()}
        else:
            d.pop("hv_bounds", None)
        if d.get("param_range") is not None:
            d["param_range"] = tuple(d["param_range"])
        return cls(**d)


def parse_objectives(spec: Any) -> tuple[Objective, ...]:
    """Objectives from ``[{"name": .., "direction": ..}]``, ``["adv_acc:max", ...]`` or ``{"adv_acc": "max"}``."""
    if spec is None:
        return DEFAULT_OBJECTIVES
    if isinstance(spec, Mapping):
        return tuple(Objective(str(k), str(v)) for k, v in spec.items())
    if not isinstance(spec, Sequence) or isinstance(spec, str):
        raise ValueError(f"objectives: expected a list, got {spec!r}")
    out = []
    for i, o in enumerate(spec):
        if isinstance(o, Objective):
            out.append(o)
        elif isinstance(o, Mapping) and set(o) == {"name", "direction"}:
            out.append(Objective(str(o["name"]), str(o["direction"])))
        elif isinstance(o, str) and o.count(":") == 1:
            name, direction = o.split(":")
            out.append(Objective(name, direction))
        else:
            raise ValueError(f"objectives[{i}]: expected {{name, direction}} or 'name:max|min', got {o!r}")
    return tuple(out)


def objective_matrix(values: Sequence[Mapping[str, float]], objectives: Sequence[Objective]) -> np.ndarray:
    """Minimisation matrix: one row per evaluated architecture, maximised objectives negated."""
    sign = np.array([-1.0 if o.direction == "max" else 1.0 for o in objectives])
    F = np.array([[float(v[o.name]) for o in objectives] for v in values], dtype=float).reshape(-1, len(objectives))
    return F * sign


def extract_objectives(value: Any, objectives: Sequence[Objective]) -> dict[str, float]:
    """The configured objectives from a trial's metric dict; ``ValueError`` names what is missing."""
    if not isinstance(value, Mapping):
        raise ValueError(f"expected a metric dict with keys {[o.name for o in objectives]}, got {value!r}")
    out = {}
    for o in objectives:
        if o.name not in value:
            raise ValueError(f"metric dict has no {o.name!r} (keys: {sorted(value)})")
        v = value[o.name]
        if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(float(v)):
            raise ValueError(f"metric {o.name!r} is not a finite number: {v!r}")
        out[o.name] = float(v)
    return out


# --------------------------------------------------------------------------- the search
class NSGA2Search:
    """Generational NSGA-II as an ask/tell state machine (Algorithm 2).

    Generation 0 proposes ``population_size`` random architectures; each later generation
    proposes ``offspring_size`` children of the current population. A generation is complete
    when every proposal has a result or has failed; then survival keeps the best
    ``population_size`` of parents and successful children, the hypervolume is recorded, and
    the next generation's proposals are drawn.

    # NOTE: a failed evaluation is not replaced: the generation completes with the survivors
    # (failures count against the budget and are never proposed again). This keeps the
    # proposals independent of when failures arrive.

    Parameters
    ----------
    config : NSGA2Config
        Search settings; a missing seed is drawn and logged.
    params_fn : callable, optional
        Architecture -> parameter count, used only to repair into ``config.param_range``.
    """

    def __init__(self, config: NSGA2Config, params_fn: Callable[[Architecture], float] | None = None,
                 _start: bool = True) -> None:
        if config.seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**63))
            _logger.info("NSGA-II: no seed given, drew seed %d", seed)
            config = NSGA2Config.from_dict({**config.to_dict(), "seed": seed})
        if config.param_range is not None and params_fn is None:
            raise ValueError("param_range is set but no params_fn was given to repair with")
        self.config = config
        self.space = config.gene_space
        self.params_fn = params_fn
        self.generation = 0
        self.proposals: list[str] = []  # keys of the current generation, in proposal order
        self.results: dict[str, dict[str, float]] = {}  # every successful evaluation
        self.failed: set[str] = set()
        self.population: list[str] = []  # P_g: survivors, parents of the next generation
        self.born: dict[str, int] = {}  # generation in which each key was proposed
        self.provenance: dict[str, dict[str, Any]] = {}
        self.history: list[dict[str, Any]] = []
        self.finished = False
        if _start:
            self.proposals = self._initial_population()
            if not self.proposals:  # nothing to evaluate would leave generation 0 waiting forever
                raise ValueError("NSGA-II: no architecture of the gene space satisfies the constraints "
                                 f"(blocks {config.blocks}, ratios {config.ratios}, param_range {config.param_range})")

    # ---- ask / tell
    @property
    def seed(self) -> int:
        return int(self.config.seed)  # type: ignore[arg-type]

    def pending(self) -> list[str]:
        """Proposals of the current generation that have neither a result nor a failure."""
        return [k for k in self.proposals if k not in self.results and k not in self.failed]

    def is_pending(self, key: str) -> bool:
        return key in self.born and self.born[key] == self.generation and not self.finished and \
            key not in self.results and key not in self.failed

    def tell(self, key: str, objectives: Mapping[str, float], provenance: Mapping[str, Any] | None = None) -> bool:
        """Record a result of a pending proposal. Returns True if a new generation started
        (or the search finished). A key that is not pending is ignored (logged)."""
        if not self.is_pending(key):
            _logger.warning("NSGA-II: ignoring a result for %s: not a pending proposal of generation %d",
                            key, self.generation)
            return False
        self.results[key] = {o.name: float(objectives[o.name]) for o in self.config.objectives}
        if provenance:
            self.provenance[key] = dict(provenance)
        return self._maybe_advance()

    def tell_failure(self, key: str) -> bool:
        """Record a failed evaluation; it is never proposed again. Same return as :meth:`tell`."""
        if not self.is_pending(key):
            _logger.warning("NSGA-II: ignoring a failure of %s: not a pending proposal", key)
            return False
        self.failed.add(key)
        return self._maybe_advance()

    def _maybe_advance(self) -> bool:
        if self.pending():
            return False
        self._advance()
        return True

    def _advance(self) -> None:
        while True:
            g = self.generation
            children = [k for k in self.proposals if k in self.results]
            combined = list(self.population) + children  # R_g = P_g ∪ Q_g (gen 0: P_0 alone)
            if combined:
                keep = survival_select(self._F(combined), self.config.population_size)
                self.population = [combined[i] for i in keep]
            front = self.front_keys()
            self.history.append({
                "generation": g, "evaluations": len(self.results) + len(self.failed),
                "failures": len(self.failed), "front_size": len(front), "hypervolume": self.hypervolume(front)})
            _logger.info("NSGA-II generation %d done: %d evaluations (%d failed), front %d, hypervolume %.6f",
                         g, self.history[-1]["evaluations"], len(self.failed), len(front),
                         self.history[-1]["hypervolume"])
            if g >= self.config.generations:
                self.finished = True
                self.proposals = []
                return
            self.generation = g + 1
            self.proposals = self._offspring()
            if self.proposals:
                return
            # Every reachable architecture was already proposed (a small subset): no result would
            # ever end this generation, so it completes empty and the next one tries again.
            _logger.warning("NSGA-II generation %d: no new architecture to propose; it completes empty",
                            self.generation)

    # ---- proposals
    def _rng(self) -> np.random.Generator:
        return np.random.default_rng([self.seed, self.generation])

    def _accept(self, g: np.ndarray, rng: np.random.Generator, batch: list[str]) -> bool:
        """Repair ``g`` and add it to ``batch`` unless it was ever proposed before."""
        g = repair_stride2(g, rng, self.space)
        if self.config.param_range is not None:
            assert self.params_fn is not None
            repaired = repair_param_range(g, self.params_fn, self.config.param_range, rng, space=self.space)
            if repaired is None:
                return False
            g = repaired
        key = genome_key(g)
        if key in self.born:  # no architecture is evaluated twice
            return False
        self.born[key] = self.generation
        batch.append(key)
        return True

    def _fill_random(self, rng: np.random.Generator, batch: list[str], n: int) -> None:
        attempts = 0
        while len(batch) < n and attempts < 100 * n:
            attempts += 1
            self._accept(random_genome(rng, self.space), rng, batch)
        if len(batch) < n:
            _logger.warning("NSGA-II generation %d: only %d of %d new architectures found",
                            self.generation, len(batch), n)

    def _initial_population(self) -> list[str]:
        rng = self._rng()
        batch: list[str] = []
        self._fill_random(rng, batch, self.config.population_size)
        return batch

    def _offspring(self) -> list[str]:
        """Q_g: tournament selection, crossover, mutation, repair (lines 26-28)."""
        cfg = self.config
        rng = self._rng()
        batch: list[str] = []
        n = cfg.offspring_size
        if not self.population:  # every earlier evaluation failed: start again at random
            self._fill_random(rng, batch, n)
            return batch
        genomes = [key_to_genome(k) for k in self.population]
        ranks, crowd = rank_and_crowding(self._F(self.population))
        attempts = 0
        while len(batch) < n and attempts < 50 * n:
            attempts += 1
            i = tournament_select(ranks, crowd, cfg.tournament_size, rng)
            j = tournament_select(ranks, crowd, cfg.tournament_size, rng, exclude=i)
            for child in crossover(genomes[i], genomes[j], rng, cfg.crossover_prob, cfg.crossover_unit):
                # A child seen before is mutated afresh rather than dropped, so late
                # generations (many duplicates) still get children of selected parents.
                for _ in range(cfg.duplicate_retries + 1):
                    if len(batch) >= n or self._accept(
                            mutate(child, rng, cfg.mutation_prob, cfg.mutation_unit, self.space), rng, batch):
                        break
        if len(batch) < n:  # the population has converged: top up with random architectures
            self._fill_random(rng, batch, n)
        return batch

    # ---- results
    def _F(self, keys: Sequence[str]) -> np.ndarray:
        return objective_matrix([self.results[k] for k in keys], self.config.objectives)

    def front_keys(self) -> list[str]:
        """Non-dominated set of every successful evaluation so far, ordered by (generation, key)."""
        keys = sorted(self.results, key=lambda k: (self.born[k], k))
        if not keys:
            return []
        F = self._F(keys)
        return [keys[i] for i in fast_non_dominated_sort(F)[0]]

    def front(self) -> list[Architecture]:
        """The front as architectures with ``objectives`` and provenance (generation, trials)."""
        out = []
        for k in self.front_keys():
            arch = key_to_arch(k)
            prov = {"generation": self.born[k], **self.provenance.get(k, {})}
            out.append(Architecture(arch.blocks, arch.ratios, dict(self.results[k]), prov))
        return out

    def hypervolume(self, keys: Sequence[str] | None = None) -> float:
        keys = self.front_keys() if keys is None else keys
        return hypervolume_of([self.results[k] for k in keys], self.config.objectives, self.config.hv_bounds)

    @property
    def evaluations(self) -> int:
        return len(self.results) + len(self.failed)

    # ---- persistence (JSON, keyed by architecture)
    def to_state(self) -> dict[str, Any]:
        return {"format": STATE_FORMAT, "version": STATE_VERSION, "config": self.config.to_dict(),
                "generation": self.generation, "finished": self.finished,
                "proposals": list(self.proposals), "population": list(self.population),
                "results": self.results, "failed": sorted(self.failed), "born": self.born,
                "provenance": self.provenance, "history": self.history}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], params_fn: Callable[[Architecture], float] | None = None
                   ) -> NSGA2Search:
        s = cls(NSGA2Config.from_dict(state_config(state)), params_fn, _start=False)
        s.generation = int(state["generation"])
        s.finished = bool(state["finished"])
        s.proposals = list(state["proposals"])
        s.population = list(state["population"])
        s.results = {k: dict(v) for k, v in state["results"].items()}
        s.failed = set(state["failed"])
        s.born = {k: int(v) for k, v in state["born"].items()}
        s.provenance = {k: dict(v) for k, v in state["provenance"].items()}
        s.history = [dict(h) for h in state["history"]]
        return s


def state_config(state: Mapping[str, Any]) -> dict[str, Any]:
    """The config dict of a saved state; a version-1 state gets the operators it ran with.

    ``ValueError`` if ``state`` is not an NSGA-II state of a known version.
    """
    version = state.get("version")
    if state.get("format") != STATE_FORMAT or version not in (1, STATE_VERSION):
        raise ValueError(f"not an NSGA-II state (format {state.get('format')!r}, version {version!r})")
    if version == 1:
        return {**V1_OPERATORS, **state["config"]}
    return dict(state["config"])
