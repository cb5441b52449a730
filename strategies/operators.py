"""The NSGA-II operators over TAM-NAS genomes (paper §III-E, Algorithm 2; Deb et al. 2002).

Small pure functions over objective matrices and genomes; the search state that uses them is
:class:`strategies.nsga2.NSGA2Search`.

- An objective matrix ``F`` (n points x m objectives) is always *minimised*; maximised
  objectives are negated by :func:`strategies.objectives.objective_matrix`.
- A genome is an int array of shape ``(16, 2)``: column 0 the block id (Table XIV), column 1
  the ratio id (Table XV), exactly :attr:`search_space.architecture.Architecture.genome`.
- The genes a search may use are a :class:`GeneSpace`: per layer the candidate block ids,
  and the candidate ratio ids; by default all of them (:data:`DEFAULT_SPACE`), or a subset
  (e.g. the blocks and ratios a quick supernet trained). Every operator keeps genomes inside it.
- Every random choice comes from the ``numpy.random.Generator`` passed in.

No torch here (docs/architecture.md §2).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import numpy as np

from search_space.architecture import Architecture
from search_space.space import (
    NUM_LAYERS,
    RATIOS,
    STRIDE2_LAYERS,
    allowed_blocks,
    block_subset,
    candidate_blocks,
    ratio_subset,
)

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


class ParetoArchive:
    """The non-dominated set of every point added so far (minimisation), kept incrementally.

    A new point enters unless a member dominates it, and evicts the members it dominates: a point
    is dominated by some point added so far iff it is dominated by a member (dominance is
    transitive), so the members are exactly ``fast_non_dominated_sort(all points)[0]``, equal
    points included, at O(front size) per point instead of an n x n x m sort of all of them.
    """

    def __init__(self, n_objectives: int) -> None:
        self.keys: list[Any] = []  # members, in the order they entered
        self.F = np.empty((0, n_objectives))

    def __len__(self) -> int:
        return len(self.keys)

    def add(self, key: Any, f: np.ndarray) -> bool:
        """Add point ``f`` under ``key``; True if it is a member now."""
        f = np.asarray(f, dtype=float)
        F = self.F
        if len(F) and bool(np.any(np.all(F <= f, axis=1) & np.any(F < f, axis=1))):
            return False
        keep = ~(np.all(f <= F, axis=1) & np.any(f < F, axis=1))
        if not keep.all():
            self.keys = [k for k, kept in zip(self.keys, keep, strict=True) if kept]
            F = F[keep]
        self.keys.append(key)
        self.F = np.vstack([F, f[None, :]])
        return True


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
    return repair_ranges(g, [(params_fn, param_range)], rng, max_steps, space)


def repair_ranges(g: np.ndarray, constraints: Sequence[tuple[Callable[[Architecture], float], tuple[float, float]]],
                  rng: np.random.Generator, max_steps: int = 200,
                  space: GeneSpace = DEFAULT_SPACE) -> np.ndarray | None:
    """:func:`repair_param_range` for several ``(count_fn, (low, high))`` constraints at once
    (parameters and FLOPs both grow with the ratios): each step fixes the first one violated."""
    g = g.copy()
    cand = space.ratios
    for _ in range(max_steps + 1):
        arch = Architecture.from_genome(g)
        violated = None
        for fn, (low, high) in constraints:
            p = fn(arch)
            if not low <= p <= high:
                violated = (p, high)
                break
        if violated is None:
            return g
        p, high = violated
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
