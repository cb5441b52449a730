"""The seeded architecture sampler of supernet training (paper §III-C, §IV-A1, Algorithm 1).

Training runs through *phases*; the paper has two:

1. **block sampling** -- only the blocks are sampled, every layer's ratio stays at a default
   (``phase.ratio``, 1.0), and a sample is kept only if its parameter count lies in
   ``param_range`` (paper: 1.823M-2.375M, 500 epochs);
2. **block and channel jointly sampling** -- blocks and ratios are sampled together inside
   another range (paper: 1.61M-2.37M, 500 epochs), and the set of ratios grows: it starts
   at ``initial_ratios`` (paper: {1.8, 2.0}) and gains the next smaller ratio every
   ``widen_every`` epochs (or steps).

A sample is *held* for ``hold`` epochs (paper: 20) or steps (SPOS: 1 step). Samples are
drawn uniformly from the valid architectures (stride-2 rule) and the parameter range is
enforced by rejection sampling with the parameter table, in O(layers) per try. Every
(phase, ratio set) combination is checked up front: a range that no architecture of the
space can meet is a :class:`SamplerError` naming the phase and the reachable interval.

The sampler owns a ``random.Random`` seeded from the config -- never NNI's unseeded
``Categorical.random()`` -- so under DDP every rank draws the same sequence; its whole
state (RNG state, current architecture, counters) is a plain dict of ints and lists that
goes into the checkpoint (:meth:`ArchitectureSampler.state_dict`).
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from search_space.encoding import (
    DEFAULT_RATIO,
    NUM_LAYERS,
    RATIOS,
    Architecture,
    SpaceConfig,
    block_subset,
    candidate_blocks,
    ratio_index,
    ratio_subset,
)
from search_space.params import param_table

from .config import check_positive

__all__ = ["ArchitectureSampler", "PhaseConfig", "SamplerConfig", "SamplerError"]

logger = logging.getLogger(__name__)

STATE_VERSION = 1


class SamplerError(ValueError):
    """The sampler cannot produce an architecture (infeasible range, too few acceptances, bad state)."""


@dataclass(frozen=True)
class PhaseConfig:
    """One sampling phase (paper §III-C1 block sampling, §III-C2 jointly sampling).

    Parameters
    ----------
    epochs : int
        Length of the phase (paper: 500 and 500).
    param_range : (float, float)
        Inclusive range of the subnet parameter count (paper: 1.823e6-2.375e6, then 1.61e6-2.37e6).
    sample_ratios : bool
        False: blocks only, every ratio is ``ratio``; True: blocks and ratios jointly.
    ratio : float
        The fixed ratio when ``sample_ratios`` is false (default 1.0, the block's base width).
    initial_ratios : tuple of float, optional
        Ratio set at the start of a joint phase (paper: 1.8, 2.0); None: all ten ratios.
    widen_every : int
        Add one ratio every this many epochs/steps (``SamplerConfig.widen_unit``); paper: 20. Ratios
        below the set come first, largest first (the paper's "one smaller ratio"); then those
        above it, smallest first.
    lr : float, optional
        Learning rate at the start of the phase (None: ``optimizer.lr``); paper: 0.1 for both.
    milestones : tuple of int
        Global epochs at which the learning rate is multiplied by ``optimizer.lr_gamma``
        (paper: 200, 400, 450 and 600, 700, 800).
    method : str, optional
        Training method of this phase (None: ``adversarial.method``), e.g. ``clean`` for a
        warm-up phase in short runs; the paper uses TRADES-YOPO throughout.
    """

    epochs: int = field(metadata={"check": check_positive})
    param_range: tuple[float, float]
    name: str = "phase"
    sample_ratios: bool = False
    ratio: float = DEFAULT_RATIO
    initial_ratios: tuple[float, ...] | None = None
    widen_every: int = field(default=20, metadata={"check": check_positive})
    lr: float | None = field(default=None, metadata={"check": check_positive})
    milestones: tuple[int, ...] = ()
    method: str | None = None

    def __post_init__(self) -> None:
        from .methods import METHODS

        if self.method is not None and self.method not in METHODS:
            raise ValueError(f"method: must be one of {', '.join(METHODS)} (or null), got {self.method!r}")
        lo, hi = self.param_range
        if not 0 <= lo <= hi:
            raise ValueError(f"param_range: expected 0 <= low <= high, got [{lo:g}, {hi:g}]")
        object.__setattr__(self, "ratio", ratio_subset((self.ratio,), "ratio")[0])
        object.__setattr__(self, "initial_ratios", ratio_subset(self.initial_ratios, "initial_ratios"))
        if list(self.milestones) != sorted(set(self.milestones)):
            raise ValueError(f"milestones: must be strictly increasing, got {list(self.milestones)}")

    def ratio_schedule(self) -> list[tuple[float, ...]]:
        """The successive ratio sets of this phase (one set if ratios are not sampled)."""
        if not self.sample_ratios:
            return [(self.ratio,)]
        start = self.initial_ratios or RATIOS
        below = sorted((r for r in RATIOS if r < min(start)), reverse=True)
        rest = below + sorted(r for r in RATIOS if r not in start and r not in below)
        return [tuple(sorted((*start, *rest[:k]))) for k in range(len(rest) + 1)]


@dataclass(frozen=True)
class SamplerConfig:
    """Phases, hold and widening units of the sampler.

    Parameters
    ----------
    phases : tuple of PhaseConfig
        Run one after another; total training length is the sum of their epochs.
    hold : int
        Keep each sampled architecture for this many ``hold_unit`` (paper: 20 epochs; SPOS: 1 step).
    hold_unit : {"epoch", "step"}
    widen_unit : {"epoch", "step"}
        Unit of ``PhaseConfig.widen_every``, counted from the start of the phase.
    max_tries : int
        Rejection-sampling tries per draw before giving up with :class:`SamplerError`.
    blocks : tuple of int, optional
        Candidate block ids (Table XIV); None: all 22. A layer samples among its allowed blocks
        (stride-2 rule) that are in this list. For short runs that cannot train every block
        (the quick preset); the search must then use the same subset (tuner ``blocks``).
    """

    phases: tuple[PhaseConfig, ...]
    hold: int = field(default=20, metadata={"check": check_positive})
    hold_unit: Literal["epoch", "step"] = "epoch"
    widen_unit: Literal["epoch", "step"] = "epoch"
    max_tries: int = field(default=200_000, metadata={"check": check_positive})
    blocks: tuple[int, ...] | None = None

    def __post_init__(self) -> None:
        if not self.phases:
            raise ValueError("phases: at least one phase is needed")
        object.__setattr__(self, "blocks", block_subset(self.blocks))
        start = 0
        for i, phase in enumerate(self.phases):
            end = start + phase.epochs
            bad = [m for m in phase.milestones if not start < m < end]
            if bad:
                raise ValueError(f"phases[{i}].milestones: {bad} outside the phase's epochs ({start}, {end}) "
                                 "(milestones count epochs globally, from the start of training)")
            start = end

    def layer_blocks(self, layer: int) -> tuple[int, ...]:
        """Candidate blocks of ``layer``: its allowed blocks, restricted to ``blocks`` if set."""
        return candidate_blocks(layer, self.blocks)

    @property
    def total_epochs(self) -> int:
        return sum(p.epochs for p in self.phases)

    def phase_start(self, index: int) -> int:
        """Global epoch at which phase ``index`` starts."""
        return sum(p.epochs for p in self.phases[:index])

    def phase_index(self, epoch: int) -> int:
        """Phase of global epoch ``epoch`` (epochs past the end stay in the last phase)."""
        start = 0
        for i, phase in enumerate(self.phases):
            start += phase.epochs
            if epoch < start:
                return i
        return len(self.phases) - 1

    def learning_rate(self, epoch: int, base_lr: float, gamma: float) -> float:
        """Learning rate of global epoch ``epoch``: the phase's lr × gamma^(milestones passed)."""
        phase = self.phases[self.phase_index(epoch)]
        lr = phase.lr if phase.lr is not None else base_lr
        return lr * gamma ** sum(1 for m in phase.milestones if epoch >= m)


class ArchitectureSampler:
    """Seeded, phase-aware, parameter-constrained architecture sampler (Algorithm 1).

    Parameters
    ----------
    config : SamplerConfig
    space : SpaceConfig
        The supernet's space; parameter counts come from its table.
    seed : int
        Seeds the sampler's own ``random.Random``; equal seeds give equal sequences.

    Raises
    ------
    SamplerError
        If a phase's range cannot be met with some of its ratio sets.
    """

    def __init__(self, config: SamplerConfig, space: SpaceConfig, seed: int) -> None:
        self.config = config
        self.space = space
        self.seed = seed
        self.table = param_table(space)
        self.rng = random.Random(seed)
        self.current: Architecture | None = None
        self.current_params: int | None = None
        self.phase: int | None = None
        self.phase_start_step = 0
        self.sampled_epoch = -1
        self.sampled_step = -1
        self.samples_drawn = 0
        self.tries = 0
        self.check_feasible()

    # ------------------------------------------------------------------ feasibility
    def check_feasible(self) -> None:
        """Raise :class:`SamplerError` if some (phase, ratio set) cannot meet its range."""
        for i, phase in enumerate(self.config.phases):
            lo, hi = phase.param_range
            for ratios in phase.ratio_schedule():
                fmin, fmax = self.table.interval(ratios, self.config.blocks)
                if hi < fmin or lo > fmax:
                    raise SamplerError(
                        f"sampler.phases[{i}] ({phase.name}): param_range [{lo:,.0f}, {hi:,.0f}] is infeasible "
                        f"for the {self.space.dataset} space at width {self.space.width_multiplier}: with ratios "
                        f"{list(ratios)} every architecture has {fmin:,}-{fmax:,} parameters "
                        "(`python -m search_space info` shows the space's range)")

    # ------------------------------------------------------------------ schedule
    def ratio_choices(self, epoch: int, step: int) -> tuple[float, ...]:
        """The ratio set at global ``epoch``/``step`` (widened progressively in a joint phase)."""
        index = self.config.phase_index(epoch)
        phase = self.config.phases[index]
        schedule = phase.ratio_schedule()
        if self.config.widen_unit == "epoch":
            elapsed = epoch - self.config.phase_start(index)
        else:
            start = self.phase_start_step if self.phase == index else step
            elapsed = step - start
        return schedule[min(len(schedule) - 1, max(0, elapsed) // phase.widen_every)]

    def architecture(self, epoch: int, step: int) -> Architecture:
        """The architecture to train at global ``epoch`` and ``step``; resamples when the hold expires.

        A new phase always starts with a new sample.
        """
        index = self.config.phase_index(epoch)
        new_phase = self.phase != index
        if new_phase:
            self.phase = index
            self.phase_start_step = step
        if self.config.hold_unit == "epoch":
            elapsed = epoch - self.sampled_epoch
        else:
            elapsed = step - self.sampled_step
        if self.current is None or new_phase or elapsed >= self.config.hold:
            self.current, self.current_params = self.draw(epoch, step)
            self.sampled_epoch, self.sampled_step = epoch, step
        return self.current

    def draw(self, epoch: int, step: int) -> tuple[Architecture, int]:
        """Draw one architecture for ``epoch``/``step`` by rejection sampling; (arch, params)."""
        index = self.config.phase_index(epoch)
        phase = self.config.phases[index]
        ratios = self.ratio_choices(epoch, step)
        arch, params, tries = self._rejection_sample(phase, ratios, index, self.rng)
        self.tries += tries
        self.samples_drawn += 1
        logger.debug("sample %d (phase %s, epoch %d, step %d): %s, %d params after %d tries",
                     self.samples_drawn, phase.name, epoch, step, arch.key, params, tries)
        return arch, params

    def _rejection_sample(self, phase: PhaseConfig, ratios: tuple[float, ...], index: int,
                          rng: random.Random) -> tuple[Architecture, int, int]:
        lo, hi = phase.param_range
        rids = [ratio_index(r) for r in ratios]
        table = self.table.table
        choices = [self.config.layer_blocks(i) for i in range(NUM_LAYERS)]
        for tries in range(1, self.config.max_tries + 1):
            blocks = [rng.choice(c) for c in choices]
            rs = [rng.choice(rids) for _ in range(NUM_LAYERS)] if len(rids) > 1 else rids * NUM_LAYERS
            params = self.table.fixed + sum(table[i][b][r] for i, (b, r) in enumerate(zip(blocks, rs, strict=True)))  # type: ignore[index]
            if lo <= params <= hi:
                arch = Architecture(tuple(blocks), tuple(RATIOS[r] for r in rs))
                return arch, params, tries
        raise SamplerError(
            f"sampler.phases[{index}] ({phase.name}): no architecture with ratios {list(ratios)} inside "
            f"param_range [{lo:,.0f}, {hi:,.0f}] in {self.config.max_tries} tries; the range is feasible "
            "but too narrow for rejection sampling -- widen it or raise sampler.max_tries")

    def sample_at(self, epoch: int, step: int, rng: random.Random) -> Architecture:
        """An architecture from the distribution training uses at ``epoch``/``step`` (its phase,
        range and ratio set), drawn with ``rng``; the sampler's own state is not touched."""
        index = self.config.phase_index(epoch)
        return self._rejection_sample(self.config.phases[index], self.ratio_choices(epoch, step), index, rng)[0]

    def probe_architecture(self, seed: int | None = None) -> Architecture:
        """A fixed probe architecture: first phase's settings, its own RNG (``seed``, default the sampler's).

        Does not touch the sampler's state, so probing never changes the training sequence.
        """
        phase = self.config.phases[0]
        rng = random.Random(f"probe-{self.seed if seed is None else seed}")
        arch, _, _ = self._rejection_sample(phase, phase.ratio_schedule()[0], 0, rng)
        return arch

    def acceptance_rate(self, phase_index: int, samples: int = 2000, seed: int = 0) -> float:
        """Monte-Carlo share of uniform samples inside the phase's range (first ratio set)."""
        phase = self.config.phases[phase_index]
        rng = random.Random(seed)
        rids = [ratio_index(r) for r in phase.ratio_schedule()[0]]
        lo, hi = phase.param_range
        hits = 0
        for _ in range(samples):
            params = self.table.fixed + sum(
                self.table.table[i][rng.choice(self.config.layer_blocks(i))][rng.choice(rids)]  # type: ignore[index]
                for i in range(NUM_LAYERS))
            hits += lo <= params <= hi
        return hits / samples

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        """Plain ints/lists/None only (``torch.load(weights_only=True)``-safe)."""
        version, internal, gauss = self.rng.getstate()
        return {
            "version": STATE_VERSION,
            "seed": self.seed,
            "rng_state": [int(version), [int(v) for v in internal], gauss],
            "current": None if self.current is None else [list(g) for g in self.current.genes],
            "current_params": self.current_params,
            "phase": self.phase,
            "phase_start_step": self.phase_start_step,
            "sampled_epoch": self.sampled_epoch,
            "sampled_step": self.sampled_step,
            "samples_drawn": self.samples_drawn,
            "tries": self.tries,
        }

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore :meth:`state_dict`; the next draws continue the saved sequence exactly."""
        if state.get("version") != STATE_VERSION:
            raise SamplerError(f"sampler state: unsupported version {state.get('version')!r}")
        if state.get("seed") != self.seed:
            logger.warning("sampler state was saved with seed %s, this run's seed is %s; continuing the saved "
                           "sequence", state.get("seed"), self.seed)
        version, internal, gauss = state["rng_state"]
        self.rng.setstate((int(version), tuple(int(v) for v in internal), gauss))
        self.current = None if state["current"] is None else Architecture.from_genes(state["current"])
        self.current_params = state["current_params"]
        self.phase = state["phase"]
        self.phase_start_step = int(state["phase_start_step"])
        self.sampled_epoch = int(state["sampled_epoch"])
        self.sampled_step = int(state["sampled_step"])
        self.samples_drawn = int(state["samples_drawn"])
        self.tries = int(state["tries"])

    def describe(self) -> str:
        """One line per phase: range, feasible interval, ratio schedule, acceptance rate."""
        lines = []
        for i, phase in enumerate(self.config.phases):
            sched = phase.ratio_schedule()
            fmin, fmax = self.table.interval(sched[0], self.config.blocks)
            lines.append(
                f"phase {i} ({phase.name}): epochs {self.config.phase_start(i)}-"
                f"{self.config.phase_start(i) + phase.epochs}, params [{phase.param_range[0]:,.0f}, "
                f"{phase.param_range[1]:,.0f}] (reachable with first ratio set: {fmin:,}-{fmax:,}), ratios "
                f"{list(sched[0])}{' widening to all' if len(sched) > 1 else ''}, acceptance "
                f"{self.acceptance_rate(i):.1%}")
        return "\n".join(lines)
