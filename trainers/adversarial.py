"""Adversarial training settings and the shared training step of the supernet trainer and the retrain trial.

:class:`AdversarialConfig` holds the method and its settings (validated; built from YAML by
:func:`make_adversarial_config`). The methods themselves -- clean, PGD-AT, TRADES, TRADES-YOPO,
YOPO -- are classes in :mod:`trainers.methods` (``training_method(config)``); the two
functions here are their shortcuts:

* :func:`adversarial_step` does the whole step -- ``optimizer.zero_grad()``, attack, loss,
  backward, ``optimizer.step()`` -- and returns float metrics
  (:meth:`~trainers.methods.TrainingMethod.step`);
* :func:`adversarial_loss` returns the loss tensor without any backward or optimizer call, for
  methods with a single backward (all but ``yopo``)
  (:meth:`~trainers.methods.TrainingMethod.loss`).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import torch
from torch import Tensor, nn

from trainers.attacks import check_attack_settings
from trainers.config import parse_float
from trainers.methods import (
    METHODS,
    NonFiniteLossError,
    OptimizerLike,
    check_finite,
    training_method,
)
from trainers.yopo import check_yopo_settings

__all__ = [
    "METHODS",
    "AdversarialConfig",
    "NonFiniteLossError",
    "adversarial_loss",
    "adversarial_step",
    "check_finite",
    "make_adversarial_config",
]

# YOPO reference code, experiments/CIFAR10-TRADES/pre-res18.TRADES-YOPO-{2-5,3-4}/config.py:
# sigma = 0.007 with eps = 0.031 (≈ 8/255). Its plain YOPO-5-3 CIFAR config uses 2/255 ≈ 0.0078.
YOPO_TRADES_SIGMA: float = 0.007


@dataclass(frozen=True)
class AdversarialConfig:
    """Settings of adversarial training; validated on construction.

    All distances are in input units (images in [0, 1]).

    Parameters
    ----------
    method : {"clean", "pgd_at", "trades", "trades_yopo", "yopo"}
        Training method (see the module docstring). The paper trains with ``trades_yopo``.
    epsilon : float
        L∞ radius of the training attack; paper: 8/255.
    step_size : float
        Step of PGD-k (``pgd_at``) and of TRADES' PGD-k (``trades``).
    steps : int
        k, the number of PGD steps of ``pgd_at`` and ``trades``.
    m, n : int
        YOPO-m-n: outer (full passes) and inner (layer-one) iterations; paper: 5 and 3.
    sigma : float
        Step of YOPO's inner iterations; default 0.007 from the YOPO repo's TRADES-YOPO
        CIFAR-10 configs.
    trades_lambda : float
        λ of paper Eq. (3), loss = CE + KL/λ; paper: 1 (TRADES' β = 1/λ).
    """

    method: str = "trades_yopo"
    epsilon: float = 8 / 255
    step_size: float = 2 / 255
    steps: int = 10
    m: int = 5
    n: int = 3
    sigma: float = YOPO_TRADES_SIGMA
    trades_lambda: float = 1.0

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"method must be one of {', '.join(METHODS)}; got {self.method!r}")
        check_attack_settings(self.epsilon, self.step_size, self.steps)
        check_yopo_settings(epsilon=self.epsilon, sigma=self.sigma, m=self.m, n=self.n)
        lam = self.trades_lambda
        if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not (lam > 0 and math.isfinite(lam)):
            raise ValueError(f"trades_lambda must be a finite number > 0, got {lam!r}")

    @property
    def name(self) -> str:
        """Paper-style name, e.g. ``TRADES-YOPO-5-3`` or ``PGD-AT-10``."""
        return training_method(self).label()

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON/YAML-able), inverse of :func:`make_adversarial_config`."""
        return asdict(self)


_FLOAT_FIELDS = ("epsilon", "step_size", "sigma", "trades_lambda")


def _parse_int(name: str, value: Any) -> int:
    if isinstance(value, bool):
        raise ValueError(f"adversarial setting {name!r} must be an int, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and value.strip().lstrip("-").isdigit():
        return int(value)
    raise ValueError(f"adversarial setting {name!r} must be an int, got {value!r}")


def make_adversarial_config(settings: Mapping[str, Any] | None = None) -> AdversarialConfig:
    """Build an :class:`AdversarialConfig` from a YAML-like dict.

    Missing keys take the paper defaults. Values may be numbers or strings;
    ε-like values may be written as fractions (``"8/255"``). The method name is
    case-insensitive and accepts hyphens (``"TRADES-YOPO"``).

    Raises
    ------
    ValueError
        On an unknown key or an invalid value, naming the setting.
    """
    if settings is None:
        return AdversarialConfig()
    if not isinstance(settings, Mapping):
        raise ValueError(f"adversarial settings must be a mapping, got {type(settings).__name__}")
    valid = [f.name for f in fields(AdversarialConfig)]
    unknown = sorted(str(k) for k in settings if k not in valid)
    if unknown:
        raise ValueError(
            f"unknown adversarial setting(s) {', '.join(map(repr, unknown))}; valid: {', '.join(valid)}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in settings.items():
        if key == "method":
            if not isinstance(value, str):
                raise ValueError(f"adversarial setting 'method' must be a string, got {value!r}")
            kwargs[key] = value.strip().lower().replace("-", "_")
        elif key in _FLOAT_FIELDS:
            try:
                kwargs[key] = parse_float(value)
            except ValueError as e:
                raise ValueError(f"adversarial setting {key!r}: {e}") from None
        else:
            kwargs[key] = _parse_int(key, value)
    return AdversarialConfig(**kwargs)


def adversarial_loss(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    config: AdversarialConfig,
    *,
    train_model: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
    step: int | None = None,
    batch: int | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """Attack (if any) and the training loss of one batch, without backward or step.

    ``training_method(config).loss(...)``: see :meth:`trainers.methods.TrainingMethod.loss`.
    Not available for ``yopo``, whose step needs ``m`` backwards (use :func:`adversarial_step`).
    """
    return training_method(config).loss(model, x, y, train_model=train_model, generator=generator,
                                        step=step, batch=batch)


def adversarial_step(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    optimizer: OptimizerLike,
    config: AdversarialConfig,
    *,
    backward: Callable[[Tensor], Any] | None = None,
    train_model: Callable[[Tensor], Tensor] | None = None,
    generator: torch.Generator | None = None,
    step: int | None = None,
    batch: int | None = None,
) -> dict[str, float]:
    """One full training step: zero_grad, attack, loss, backward(s), optimizer step.

    ``training_method(config).step(...)``: see :meth:`trainers.methods.TrainingMethod.step`.
    """
    return training_method(config).step(model, x, y, optimizer, generator=generator, backward=backward,
                                        train_model=train_model, step=step, batch=batch)
