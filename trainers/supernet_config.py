"""The supernet training config (``configs/supernet/*.yml``): schema, loading and checks.

Sections: ``data``, ``optimizer``, ``trainer`` (:mod:`trainers.config`), ``adversarial``
(:class:`~trainers.adversarial.AdversarialConfig`), ``sampler``
(:class:`~trainers.sampler.SamplerConfig`) and ``validation``, the end-of-epoch probe
(:class:`ValidationConfig`, an :class:`~trainers.evaluation.EvaluationConfig`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from search_space.encoding import SpaceConfig
from search_space.space import DEFAULT_READING, READINGS

from .adversarial import AdversarialConfig, make_adversarial_config
from .config import (
    ConfigError,
    DataConfig,
    OptimizerConfig,
    TrainerConfig,
    apply_overrides,
    build_config,
    check_positive,
    default_root,
    load_yaml,
    one_of,
)
from .evaluation import EvaluationConfig
from .sampler import ArchitectureSampler, SamplerConfig

__all__ = ["SupernetConfig", "ValidationConfig", "load_supernet_config"]


@dataclass(frozen=True)
class ValidationConfig(EvaluationConfig):
    """End-of-epoch probe: which architecture, one PGD attack, BN recalibration batches, how often.

    ``epsilons`` (one value) defaults to the training ε; ``batch_size`` to ``data.eval_batch_size``;
    ``seed`` to the run's seed.
    """

    steps: tuple[int, ...] = (10,)
    probe: Literal["current", "fixed"] = "fixed"
    every_n_epochs: int = field(default=1, metadata={"check": check_positive})

    def __post_init__(self) -> None:
        super().__post_init__()
        self.single_attack("the probe")


@dataclass(frozen=True)
class SupernetConfig:
    """A supernet training run (see ``configs/supernet/*.yml`` for the documented keys)."""

    sampler: SamplerConfig
    seed: int = 0
    width_multiplier: int = field(default=1, metadata={"check": one_of(1, 2, 4, 8)})
    # the reading of Table I the supernet is built with (README "Model sizes"); the record carries it on
    reading: str = field(default=DEFAULT_READING, metadata={"check": one_of(*READINGS)})
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig,
                                           metadata={"parse": make_adversarial_config})
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    keep_checkpoint_every: int | None = field(default=None, metadata={"check": check_positive})
    description: str = ""

    @property
    def total_epochs(self) -> int:
        return self.sampler.total_epochs

    @property
    def space(self) -> SpaceConfig:
        return SpaceConfig.for_dataset(self.data.dataset, self.width_multiplier, self.reading)

    def phase_adversarial(self, phase: int) -> AdversarialConfig:
        """The training method of sampler phase ``phase`` (its ``method`` overrides ``adversarial.method``)."""
        method = self.sampler.phases[phase].method
        if method is None or method == self.adversarial.method:
            return self.adversarial
        return dataclasses.replace(self.adversarial, method=method)

    def probe_attack(self) -> tuple[float, int, float]:
        """``(ε, steps, step size)`` of the probe's PGD (ε defaults to the training ε)."""
        eps, steps = self.validation.single_attack("the probe")
        eps = self.adversarial.epsilon if eps is None else eps
        return eps, steps, self.validation.step_size_ratio * eps

    def with_absolute_data_root(self) -> SupernetConfig:
        """This config with ``data.root`` made absolute (the default root if unset), as the checkpoint records it."""
        root = os.path.abspath(self.data.root if self.data.root is not None else default_root())
        return dataclasses.replace(self, data=dataclasses.replace(self.data, root=root))


def load_supernet_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (),
                         params: dict[str, Any] | None = None) -> SupernetConfig:
    """Read and validate a supernet config; ``overrides`` are ``key=value`` strings, ``params`` a dict."""
    data = load_yaml(path)
    data = apply_overrides(data, list(overrides), source=f"{path} (--set)")
    if params:
        data = apply_overrides(data, [f"{k}={json.dumps(v)}" for k, v in params.items()],
                               source=f"{path} (NNI parameters)")
    config = build_config(SupernetConfig, data, f"{path}: ")
    try:  # feasibility of the parameter ranges is a config error too
        ArchitectureSampler(config.sampler, config.space, config.seed)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    return config
