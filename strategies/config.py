"""The settings of one NSGA-II search, :class:`NSGA2Config`, and the two ways they arrive.

Every field of :class:`NSGA2Config` is a classArg of :class:`strategies.tuner.NSGA2Tuner` under
its own name and a flag of ``python -m strategies search`` under the spelling in its metadata:
:func:`add_config_arguments` and :func:`config_from_arguments` read the fields, and
:meth:`NSGA2Config.from_dict` turns classArgs (JSON values) into a config, so neither list is
written twice.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from search_space.architecture import DEFAULT_OBJECTIVES, Objective
from search_space.space import block_subset, ratio_subset

from .hypervolume import DEFAULT_BOUNDS
from .objectives import parse_objectives
from .operators import GeneSpace

UNITS = ("layer", "gene")
FAIL_FAST_MIN = 5  # the smallest fail_fast_trials chosen when none is given


def _comma_list(convert: type) -> Callable[[str, str], list]:
    def parse(value: str, flag: str) -> list:
        try:
            return [convert(x) for x in value.split(",")]
        except ValueError:
            raise ValueError(f"{flag}: expected a comma-separated list of {convert.__name__}s, "
                             f"got {value!r}") from None

    return parse


def _bounds(values: list[str], flag: str) -> dict[str, list[float]]:
    out = {}
    for v in values:
        name, *bounds = v.split(":")
        try:
            low, high = (float(b) for b in bounds)
        except ValueError:
            raise ValueError(f"{flag}: expected NAME:LOW:HIGH, got {v!r}") from None
        out[name] = [low, high]
    return out


def _field(default: Any, flag: str, help: str, parse: Callable[[Any, str], Any] | None = None,
           **argparse_kwargs: Any) -> Any:
    """A config field whose metadata holds its ``strategies search`` flag, the flag's help, and how
    the flag's value becomes a classArg value (``parse``; argparse's ``type`` otherwise).
    ``default`` may be a factory (a type) for a mutable default."""
    metadata = {"flag": flag, "help": help, "parse": parse, "argparse": argparse_kwargs}
    if isinstance(default, type):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class NSGA2Config:
    """Settings of one search; defaults are the paper's (§IV-A2).

    ``generations`` counts offspring generations after the initial population, so the
    evaluation budget is ``population_size + generations * offspring_size`` (paper:
    50 + 20 x 50). ``hv_bounds`` maps an objective name to the ``(low, high)`` range used to
    normalise it for the hypervolume (see :mod:`strategies.hypervolume`).

    ``crossover_unit`` and ``mutation_unit`` (``"gene"`` or ``"layer"``) choose how
    :func:`~strategies.operators.crossover` and :func:`~strategies.operators.mutate` read the
    paper; ``mutation_prob`` is per unit. ``duplicate_retries``: a child that was already proposed
    is mutated again up to this many times before new parents are drawn (0: draw new parents at once).

    ``fail_fast_trials``: when that many trials (evaluations) have ended and none gave a valid
    result, the search stops with the first failure's reason (a wrong checkpoint path, a bad flag)
    instead of spending its whole budget; before the first valid result no more than that many
    are started. ``None`` (default): the tuner's first request (NNI's ``trialConcurrency``) + 2,
    at least :data:`FAIL_FAST_MIN`, so the first wave of trials is never held back; 0 turns it off.
    :meth:`fail_fast` resolves it.

    ``param_range`` / ``flops_range``: proposals are repaired into these ranges of parameters /
    FLOPs (one image, multiply-add = 2), counted with the tables of the searched space
    (:mod:`search_space.params`, :mod:`search_space.flops`), so no model is built.

    ``blocks`` / ``ratios`` restrict the search to a subset of the space: block ids of
    Table XIV and ratios of Table XV (e.g. those a quick supernet trained); ``None`` (default)
    is all of them. Per layer the candidates are ``allowed_blocks(i)`` ∩ ``blocks``, so a
    subset must leave the stride-2 layers a block that is not pure robust. Both are stored
    sorted; :attr:`gene_space` is the resulting :class:`~strategies.operators.GeneSpace`.
    """

    population_size: int = _field(50, "--population", "initial population (paper: 50)", type=int)
    offspring_size: int = _field(50, "--offspring", "children per generation (paper: 50)", type=int)
    generations: int = _field(20, "--generations", "offspring generations after the initial population (paper: 20)",
                              type=int)
    tournament_size: int = _field(10, "--tournament", "entrants per tournament (paper: 10)", type=int)
    # NOTE: the paper names p_c but not its value; Deb et al. use 0.9
    crossover_prob: float = _field(0.9, "--crossover", "crossover probability p_c", type=float)
    mutation_prob: float = _field(0.1, "--mutation", "mutation probability per --mutation-unit (paper: 0.1)",
                                  type=float)
    # Operator details the paper leaves open; defaults chosen by the 50-seed benchmark
    # (BENCHMARKS.md, "Search quality"); V1_OPERATORS restores the earlier behaviour.
    crossover_unit: str = _field("gene", "--crossover-unit", "inherit block and ratio independently (gene) or "
                                 "together (layer)", choices=UNITS)
    mutation_unit: str = _field("layer", "--mutation-unit", "--mutation is the probability per layer or per "
                                "block/ratio gene", choices=UNITS)
    duplicate_retries: int = _field(10, "--duplicate-retries",
                                    "mutate an already-proposed child again up to this many times", type=int)
    seed: int | None = _field(None, "--seed", "seed of every random choice (none: drawn and logged)", type=int)
    objectives: tuple[Objective, ...] = _field(DEFAULT_OBJECTIVES, "--objectives", "keys of the metric dict to "
                                               "optimise", nargs="+", metavar="NAME:max|min")
    param_range: tuple[float, float] | None = _field(
        None, "--param-range", "repair proposals into this parameter range (parameter table of the space)",
        nargs=2, type=float, metavar=("LOW", "HIGH"))
    flops_range: tuple[float, float] | None = _field(
        None, "--flops-range", "repair proposals into this FLOPs range (FLOPs table of the space: one image, "
        "multiply-add = 2)", nargs=2, type=float, metavar=("LOW", "HIGH"))
    hv_bounds: Mapping[str, tuple[float, float]] = _field(
        dict, "--hv-bounds", "normalisation range of an objective for the hypervolume (defaults: "
        + ", ".join(f"{k} {lo:g}-{hi:g}" for k, (lo, hi) in DEFAULT_BOUNDS.items()) + ")",
        _bounds, nargs="+", metavar="NAME:LOW:HIGH")
    blocks: tuple[int, ...] | None = _field(None, "--blocks", "search only these block ids (Table XIV), e.g. "
                                            "0,3,6,18 (none: all 22)", _comma_list(int), metavar="ID,ID,...")
    ratios: tuple[float, ...] | None = _field(None, "--ratios", "search only these channel ratios (Table XV), "
                                              "e.g. 0.8,1.0,1.2 (none: all ten)", _comma_list(float),
                                              metavar="R,R,...")
    fail_fast_trials: int | None = _field(None, "--fail-fast", "stop the search when the first N trials all fail "
                                          f"(0: never; none: the tuner's trialConcurrency + 2, at least "
                                          f"{FAIL_FAST_MIN}; in-process {FAIL_FAST_MIN})", type=int, metavar="N")

    def __post_init__(self) -> None:
        def check(cond: bool, msg: str) -> None:
            if not cond:
                raise ValueError(msg)

        for name in ("crossover_unit", "mutation_unit"):
            check(getattr(self, name) in UNITS, f"{name}: expected one of {list(UNITS)}, got {getattr(self, name)!r}")
        check(isinstance(self.duplicate_retries, int) and not isinstance(self.duplicate_retries, bool)
              and self.duplicate_retries >= 0,
              f"duplicate_retries: expected an integer >= 0, got {self.duplicate_retries!r}")
        ff = self.fail_fast_trials
        check(ff is None or (isinstance(ff, int) and not isinstance(ff, bool) and ff >= 0),
              f"fail_fast_trials: expected an integer >= 0 or null, got {ff!r}")
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
        bounds = {**DEFAULT_BOUNDS, **dict(self.hv_bounds)}
        for o in objs:
            check(o.name in bounds, f"hv_bounds: objective {o.name!r} has no normalisation range; "
                                    f"give hv_bounds: {{{o.name!r}: [low, high]}}")
            lo, hi = bounds[o.name]
            check(float(hi) > float(lo), f"hv_bounds.{o.name}: need low < high, got {[lo, hi]}")
        object.__setattr__(self, "hv_bounds", {o.name: (float(bounds[o.name][0]), float(bounds[o.name][1]))
                                               for o in objs})
        for name in ("param_range", "flops_range"):
            value = getattr(self, name)
            if value is not None:
                pr = tuple(value)
                check(len(pr) == 2 and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in pr)
                      and 0 <= pr[0] <= pr[1], f"{name}: expected [low, high] with 0 <= low <= high, got {value!r}")
                object.__setattr__(self, name, (float(pr[0]), float(pr[1])))
        object.__setattr__(self, "blocks", block_subset(self.blocks))
        object.__setattr__(self, "ratios", ratio_subset(self.ratios))
        GeneSpace.build(self.blocks, self.ratios)  # a layer left without a candidate block is an error

    @property
    def gene_space(self) -> GeneSpace:
        """The genes this search may propose (:data:`~strategies.operators.DEFAULT_SPACE` without a subset)."""
        return GeneSpace.build(self.blocks, self.ratios)

    def fail_fast(self, concurrency: int = 1) -> int:
        """``fail_fast_trials`` for a search that starts ``concurrency`` trials at once (0: off)."""
        if self.fail_fast_trials is not None:
            return self.fail_fast_trials
        return max(FAIL_FAST_MIN, concurrency + 2)

    @property
    def budget(self) -> int:
        """Evaluations of a full run without failures or exhausted proposals."""
        return self.population_size + self.generations * self.offspring_size

    def to_dict(self) -> dict[str, Any]:
        """JSON values, one per field (the classArgs that give this config)."""
        d = {f.name: getattr(self, f.name) for f in fields(self)}
        d["objectives"] = [{"name": o.name, "direction": o.direction} for o in self.objectives]
        d["param_range"] = list(self.param_range) if self.param_range else None
        d["flops_range"] = list(self.flops_range) if self.flops_range else None
        d["hv_bounds"] = {k: list(v) for k, v in self.hv_bounds.items()}
        d["blocks"] = list(self.blocks) if self.blocks is not None else None
        d["ratios"] = list(self.ratios) if self.ratios is not None else None
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> NSGA2Config:
        """A config from JSON values (classArgs, a saved state); ``ValueError``/``TypeError`` if invalid."""
        d = dict(d)
        if "objectives" in d:
            d["objectives"] = parse_objectives(d["objectives"])
        if d.get("hv_bounds") is not None:
            if not isinstance(d["hv_bounds"], Mapping):
                raise ValueError(f"hv_bounds: expected {{name: [low, high]}}, got {d['hv_bounds']!r}")
            d["hv_bounds"] = {k: tuple(v) for k, v in d["hv_bounds"].items()}
        else:
            d.pop("hv_bounds", None)
        for name in ("param_range", "flops_range"):
            if d.get(name) is not None:
                if not isinstance(d[name], (list, tuple)):
                    raise ValueError(f"{name}: expected [low, high], got {d[name]!r}")
                d[name] = tuple(d[name])
        return cls(**d)


CONFIG_KEYS: tuple[str, ...] = tuple(f.name for f in fields(NSGA2Config))


def _shown_default(f: Any) -> str:
    default = NSGA2Config().to_dict()[f.name]
    if f.name == "objectives":
        return " ".join(f"{o['name']}:{o['direction']}" for o in default)
    if f.name == "hv_bounds":
        return "as listed"
    return "none" if default in (None, {}) else str(default)


def add_config_arguments(parser: argparse.ArgumentParser) -> None:
    """One flag per :class:`NSGA2Config` field (spelling and help from its metadata); unset flags are ``None``."""
    for f in fields(NSGA2Config):
        meta = f.metadata
        parser.add_argument(meta["flag"], dest=f.name, default=None, **meta["argparse"],
                            help=f"{meta['help']}; classArg {f.name}, default {_shown_default(f)}")


def config_from_arguments(args: argparse.Namespace) -> NSGA2Config:
    """The config of the flags :func:`add_config_arguments` added; unset ones keep their defaults."""
    values = {}
    for f in fields(NSGA2Config):
        value = getattr(args, f.name)
        if value is not None:
            parse = f.metadata["parse"]
            values[f.name] = parse(value, f.metadata["flag"]) if parse else value
    return NSGA2Config.from_dict(values)
