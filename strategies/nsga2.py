"""NSGA-II over TAM-NAS architectures (paper §III-E, Algorithm 2; Deb et al. 2002): the search state.

:class:`NSGA2Search` is an ask/tell state machine over the operators of
:mod:`strategies.operators`, shared by the NNI tuner (:mod:`strategies.tuner`) and the
in-process runner (:mod:`strategies.runner`); its settings are an
:class:`~strategies.config.NSGA2Config`. Proposals and results are keyed by
:attr:`~search_space.architecture.Architecture.key`, and the whole state saves to JSON
(:meth:`NSGA2Search.to_state`, :meth:`NSGA2Search.from_state`).

The generator of generation ``g`` is ``default_rng([seed, g])`` and a generation's proposals are
all drawn when it starts, so the proposals do not depend on the order in which results arrive
(the tuner's concurrency): the tuner and the in-process runner give the same front.

No torch here (docs/architecture.md §2).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from search_space.architecture import Architecture

from .config import NSGA2Config
from .hypervolume import hypervolume_of
from .objectives import objective_matrix
from .operators import (  # noqa: F401  (fast_non_dominated_sort: callers import it from here)
    ParetoArchive,
    crossover,
    fast_non_dominated_sort,
    mutate,
    random_genome,
    rank_and_crowding,
    repair_ranges,
    repair_stride2,
    survival_select,
    tournament_select,
)

_logger = logging.getLogger(__name__)

STATE_FORMAT = "tamnas-nsga2-state"
STATE_VERSION = 2
# Operator settings that version-1 states (written before these keys existed) ran with.
V1_OPERATORS = {"crossover_unit": "layer", "mutation_unit": "gene", "duplicate_retries": 0}


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
    flops_fn : callable, optional
        Architecture -> FLOPs, used only to repair into ``config.flops_range``.
    """

    def __init__(self, config: NSGA2Config, params_fn: Callable[[Architecture], float] | None = None,
                 _start: bool = True, *, flops_fn: Callable[[Architecture], float] | None = None) -> None:
        if config.seed is None:
            seed = int(np.random.SeedSequence().entropy % (2**63))
            _logger.info("NSGA-II: no seed given, drew seed %d", seed)
            config = NSGA2Config.from_dict({**config.to_dict(), "seed": seed})
        if config.param_range is not None and params_fn is None:
            raise ValueError("param_range is set but no params_fn was given to repair with")
        if config.flops_range is not None and flops_fn is None:
            raise ValueError("flops_range is set but no flops_fn was given to repair with")
        self.config = config
        self.space = config.gene_space
        self.params_fn = params_fn
        self.flops_fn = flops_fn
        self._constraints = [(fn, r) for fn, r in ((params_fn, config.param_range), (flops_fn, config.flops_range))
                             if r is not None]
        self.generation = 0
        self.proposals: list[str] = []  # keys of the current generation, in proposal order
        self.results: dict[str, dict[str, float]] = {}  # every successful evaluation
        self.failed: set[str] = set()
        self.population: list[str] = []  # P_g: survivors, parents of the next generation
        self.born: dict[str, int] = {}  # generation in which each key was proposed
        self.provenance: dict[str, dict[str, Any]] = {}
        self.late: dict[str, dict[str, Any]] = {}  # results that arrived after their generation closed
        self.history: list[dict[str, Any]] = []
        self.finished = False
        # The archive front (non-dominated set of every result), kept as results arrive instead of
        # re-sorting all results each generation: keys and their minimisation rows (objective_matrix).
        self._archive = ParetoArchive(len(config.objectives))
        self._archived = 0  # results the archive has seen
        self._genomes: dict[str, np.ndarray] = {}  # genome of each proposal (no re-parsing of keys)
        if _start:
            self.proposals = self._initial_population()
            if not self.proposals:  # nothing to evaluate would leave generation 0 waiting forever
                raise ValueError("NSGA-II: no architecture of the gene space satisfies the constraints "
                                 f"(blocks {config.blocks}, ratios {config.ratios}, param_range {config.param_range}, "
                                 f"flops_range {config.flops_range})")

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
        (or the search finished).

        No valid result is thrown away: one for a proposal of the open generation that was
        counted failed is accepted (the failure is withdrawn); one for a proposal of a closed
        generation that has no result is kept in :attr:`late` (saved with the state, not part of
        the search, whose later generations were drawn without it). Anything else is ignored (logged).
        """
        values = {o.name: float(objectives[o.name]) for o in self.config.objectives}
        if key in self.failed and self.born.get(key) == self.generation and not self.finished:
            _logger.warning("NSGA-II: a result for %s, counted failed, arrived while its generation is open: "
                            "accepted", key)
            self.failed.discard(key)
        elif not self.is_pending(key):
            if key in self.born and key not in self.results:
                self.late[key] = {"objectives": values, "provenance": dict(provenance or {}),
                                  "generation": self.born[key], "arrived_in": self.generation}
                _logger.warning("NSGA-II: a result for %s (generation %d) arrived after its generation closed: "
                                "recorded as late, not part of the search", key, self.born[key])
            else:
                _logger.warning("NSGA-II: ignoring a result for %s: not a pending proposal of generation %d",
                                key, self.generation)
            return False
        self.results[key] = values
        self._archive_result(key)
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
        if self._constraints:
            repaired = repair_ranges(g, self._constraints, rng, space=self.space)
            if repaired is None:
                return False
            g = repaired
        key = Architecture.key_of(g)
        if key in self.born:  # no architecture is evaluated twice
            return False
        self.born[key] = self.generation
        self._genomes[key] = g
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
        genomes = [self._genome(k) for k in self.population]
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

    def _genome(self, key: str) -> np.ndarray:
        if key not in self._genomes:
            self._genomes[key] = Architecture.from_key(key).genome
        return self._genomes[key]

    def _archive_result(self, key: str) -> None:
        self._archive.add(key, self._F([key])[0])
        self._archived += 1

    def front_keys(self) -> list[str]:
        """Non-dominated set of every successful evaluation so far, ordered by (generation, key).

        Kept as results arrive (:class:`~strategies.operators.ParetoArchive`), not re-sorted."""
        if self._archived != len(self.results):  # results set from outside (a saved state): rebuild once
            self._archive, self._archived = ParetoArchive(len(self.config.objectives)), 0
            for k in self.results:
                self._archive_result(k)
        return sorted(self._archive.keys, key=lambda k: (self.born[k], k))

    def front(self) -> list[Architecture]:
        """The front as architectures with ``objectives`` and provenance (generation, trials)."""
        out = []
        for k in self.front_keys():
            prov = {"generation": self.born[k], **self.provenance.get(k, {})}
            out.append(Architecture.from_key(k).with_info(self.results[k], prov))
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
                "provenance": self.provenance, "history": self.history, "late": self.late}

    @classmethod
    def from_state(cls, state: Mapping[str, Any], params_fn: Callable[[Architecture], float] | None = None,
                   flops_fn: Callable[[Architecture], float] | None = None) -> NSGA2Search:
        s = cls(NSGA2Config.from_dict(state_config(state)), params_fn, _start=False, flops_fn=flops_fn)
        s.generation = int(state["generation"])
        s.finished = bool(state["finished"])
        s.proposals = list(state["proposals"])
        s.population = list(state["population"])
        s.results = {k: dict(v) for k, v in state["results"].items()}
        s.failed = set(state["failed"])
        s.born = {k: int(v) for k, v in state["born"].items()}
        s.provenance = {k: dict(v) for k, v in state["provenance"].items()}
        s.history = [dict(h) for h in state["history"]]
        s.late = {k: dict(v) for k, v in state.get("late", {}).items()}
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
