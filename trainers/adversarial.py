"""One adversarial training step, shared by the supernet trainer and the retrain trial.

The method is chosen by configuration (:class:`AdversarialConfig`):

=========== ====================================================================
method      what one step does
=========== ====================================================================
clean       CE on clean images.
pgd_at      Madry PGD-AT: PGD-k on CE (eval mode), then CE on the adversarial images.
trades      TRADES: PGD-k on KL (eval mode), then CE(f(x)) + KL(f(x) ‖ f(x'))/λ.
trades_yopo TRADES-YOPO-m-n (paper §III-D, DESIGN §5): the YOPO m × n inner
            maximization of the KL (eval mode), then the TRADES loss.
yopo        YOPO-m-n: m full CE passes in train mode whose parameter gradients
            are accumulated (averaged), each but the last followed by n layer-one
            steps on η.
=========== ====================================================================

Two entry points:

* :func:`adversarial_step` does the whole step -- ``optimizer.zero_grad()``,
  attack, loss, backward, ``optimizer.step()`` -- and returns float metrics. A
  plain loop passes a ``torch.optim.Optimizer``; a LightningModule in manual
  optimization passes ``self.optimizers()`` and ``backward=self.manual_backward``.
  It works for every method, including ``yopo`` (several backwards per step).
* :func:`adversarial_loss` returns the loss tensor without any backward or
  optimizer call, for methods with a single backward (all but ``yopo``), e.g.
  for a trainer that does its own backward, gradient clipping or accumulation.

Non-finite losses raise :class:`NonFiniteLossError` before any backward, with
the step/batch index in the message, instead of training on NaN.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainers.attacks import check_attack_settings, pgd_attack, trades_attack, trades_loss
from trainers.yopo import (
    check_layer_one_interface,
    check_yopo_settings,
    frozen_norm_statistics,
    layer_one_steps,
    trades_yopo_perturbation,
)

__all__ = [
    "METHODS",
    "AdversarialConfig",
    "NonFiniteLossError",
    "adversarial_loss",
    "adversarial_step",
    "check_finite",
    "make_adversarial_config",
]

logger = logging.getLogger(__name__)

METHODS: tuple[str, ...] = ("clean", "pgd_at", "trades", "trades_yopo", "yopo")

# YOPO reference code, experiments/CIFAR10-TRADES/pre-res18.TRADES-YOPO-{2-5,3-4}/config.py:
# sigma = 0.007 with eps = 0.031 (≈ 8/255). Its plain YOPO-5-3 CIFAR config uses 2/255 ≈ 0.0078.
YOPO_TRADES_SIGMA: float = 0.007

# Standard deviation of the Gaussian start of the TRADES and TRADES-YOPO attacks (TRADES/YOPO code).
TRADES_INIT_STD: float = 0.001


class NonFiniteLossError(RuntimeError):
    """The training loss is NaN or infinite; training stops instead of stepping on it.

    Attributes
    ----------
    value : float
        The offending loss value.
    step, batch : int or None
        Global step and batch index, when the caller gave them.
    """

    def __init__(
        self, value: float, *, what: str = "loss", step: int | None = None, batch: int | None = None
    ):
        self.value = value
        self.step = step
        self.batch = batch
        where = ", ".join(
            f"{name} {index}" for name, index in (("step", step), ("batch", batch)) if index is not None
        )
        super().__init__(
            f"non-finite {what} ({value}) at {where or 'an unknown step (pass step=/batch= to locate it)'}; "
            "stopping instead of training on NaN -- lower the learning rate, check the data for NaN/inf, "
            "or resume from the last good checkpoint"
        )


def check_finite(
    loss: Tensor, *, what: str = "loss", step: int | None = None, batch: int | None = None
) -> float:
    """Return ``loss.item()``; raise :class:`NonFiniteLossError` if it is NaN or ±inf."""
    value = float(loss.detach().item())
    if not math.isfinite(value):
        raise NonFiniteLossError(value, what=what, step=step, batch=batch)
    return value


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
        return {
            "clean": "clean",
            "pgd_at": f"PGD-AT-{self.steps}",
            "trades": f"TRADES-PGD-{self.steps}",
            "trades_yopo": f"TRADES-YOPO-{self.m}-{self.n}",
            "yopo": f"YOPO-{self.m}-{self.n}",
        }[self.method]

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (JSON/YAML-able), inverse of :func:`make_adversarial_config`."""
        return asdict(self)


_FRACTION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)\s*/\s*([0-9]*\.?[0-9]+)\s*$")
_FLOAT_FIELDS = ("epsilon", "step_size", "sigma", "trades_lambda")
_INT_FIELDS = ("steps", "m", "n")


def _parse_float(name: str, value: Any) -> float:
    if isinstance(value, bool):
        raise ValueError(f"adversarial setting {name!r} must be a number, got {value!r}")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        match = _FRACTION.match(value)
        if match:  # "8/255", as the paper writes ε
            denominator = float(match.group(2))
            if denominator == 0:
                raise ValueError(f"adversarial setting {name!r} divides by zero: {value!r}")
            return float(match.group(1)) / denominator
        try:
            return float(value)
        except ValueError:
            pass
    raise ValueError(
        f"adversarial setting {name!r} must be a number or a fraction like '8/255', got {value!r}"
    )


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
            kwargs[key] = _parse_float(key, value)
        else:
            kwargs[key] = _parse_int(key, value)
    return AdversarialConfig(**kwargs)


class OptimizerLike(Protocol):
    """``torch.optim.Optimizer`` or Lightning's ``LightningOptimizer``."""

    def zero_grad(self, set_to_none: bool = ...) -> None: ...

    def step(self, closure: Any = ...) -> Any: ...


def _accuracy(logits: Tensor, y: Tensor) -> float:
    return float((logits.detach().argmax(dim=1) == y).float().mean().item())


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

    The attack runs with the model in eval mode; the model is left in **train
    mode** for the returned loss. Not available for ``yopo``, whose step needs
    ``m`` backwards (use :func:`adversarial_step`).

    Parameters
    ----------
    model : nn.Module
        The network (images in [0, 1] → logits). ``trades_yopo`` needs the
        layer-one interface (``layer_one``, ``forward_from_layer_one``).
    x, y : Tensor
        Images in [0, 1] and labels.
    config : AdversarialConfig
        Method and settings.
    train_model : callable, optional
        What computes the training logits (default ``model``), e.g. a
        DistributedDataParallel wrapper of ``model``; attacks always use ``model``.
    generator : torch.Generator, optional
        Random starts of the attacks; the global RNG if None.
    step, batch : int, optional
        Indices reported by :class:`NonFiniteLossError`.

    Returns
    -------
    loss : Tensor
        Scalar training loss (finite, checked).
    metrics : dict of str to float
        ``loss``, ``clean_loss``, ``clean_acc``, and for adversarial methods
        ``adv_loss`` (CE on x' for ``pgd_at``, the KL term for TRADES) and
        ``adv_acc`` (train-time accuracy on x'). Accuracies are in [0, 1].
    """
    if config.method == "yopo":
        raise ValueError(
            "method 'yopo' accumulates gradients over m passes: use adversarial_step, not adversarial_loss"
        )
    forward = model if train_model is None else train_model
    x = x.detach()
    metrics: dict[str, float] = {}

    if config.method == "clean":
        model.train()
        logits = forward(x)
        loss = F.cross_entropy(logits, y)
        value = check_finite(loss, step=step, batch=batch)
        metrics.update(loss=value, clean_loss=value, clean_acc=_accuracy(logits, y))
        return loss, metrics

    model.eval()
    if config.method == "pgd_at":
        with torch.no_grad():
            clean_logits = model(x)
        # Clean metrics in eval mode: one extra forward, PGD-AT never sees x itself.
        metrics.update(
            clean_loss=float(F.cross_entropy(clean_logits, y).item()), clean_acc=_accuracy(clean_logits, y)
        )
        x_adv = pgd_attack(
            model,
            x,
            y,
            epsilon=config.epsilon,
            step_size=config.step_size,
            steps=config.steps,
            generator=generator,
        )
        model.train()
        adv_logits = forward(x_adv)
        loss = F.cross_entropy(adv_logits, y)
        value = check_finite(loss, step=step, batch=batch)
        metrics.update(loss=value, adv_loss=value, adv_acc=_accuracy(adv_logits, y))
        return loss, metrics

    if config.method == "trades":
        x_adv = trades_attack(
            model,
            x,
            epsilon=config.epsilon,
            step_size=config.step_size,
            steps=config.steps,
            init_std=TRADES_INIT_STD,
            generator=generator,
        )
    else:  # trades_yopo
        check_layer_one_interface(model)
        eta, _ = trades_yopo_perturbation(
            model,
            x,
            epsilon=config.epsilon,
            sigma=config.sigma,
            m=config.m,
            n=config.n,
            init_std=TRADES_INIT_STD,
            generator=generator,
        )
        x_adv = torch.clamp(x + eta, 0.0, 1.0)

    model.train()
    clean_logits = forward(x)
    adv_logits = forward(x_adv)
    terms = trades_loss(clean_logits, adv_logits, y, trades_lambda=config.trades_lambda)
    value = check_finite(terms.total, step=step, batch=batch)
    metrics.update(
        loss=value,
        clean_loss=float(terms.natural.item()),
        clean_acc=_accuracy(clean_logits, y),
        adv_loss=float(terms.robust.item()),
        adv_acc=_accuracy(adv_logits, y),
    )
    return terms.total, metrics


def _yopo_step(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    optimizer: OptimizerLike,
    config: AdversarialConfig,
    *,
    backward: Callable[[Tensor], Any],
    forward: Callable[[Tensor], Tensor],
    generator: torch.Generator | None,
    step: int | None,
    batch: int | None,
) -> dict[str, float]:
    """YOPO-m-n (Zhang et al. 2019, Alg. 1 with CE): one optimizer step after m passes.

    Passes 1 … m−1 are each followed by n layer-one steps on η; the last pass is not, since
    nothing would use the η they produce: m full passes and (m − 1)·n layer-one steps per step.

    # NOTE: the reference code sums the m pass losses and divides the learning
    # rate by m/2; we average them (loss/m), so one learning rate fits all methods.
    # Layer one's parameters get the gradient of the full passes only (the
    # reference additionally back-propagates −H at the final η into layer one).
    """
    check_layer_one_interface(model)
    x = x.detach()
    model.eval()
    with torch.no_grad():
        clean_logits = model(x)
    metrics = {
        "clean_loss": float(F.cross_entropy(clean_logits, y).item()),
        "clean_acc": _accuracy(clean_logits, y),
    }

    # The m passes are training passes (train mode), as in the reference code.
    model.train()
    eps = config.epsilon
    if generator is None:
        noise = torch.empty_like(x).uniform_(-eps, eps)
    else:
        noise = (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    eta = torch.clamp(x + noise, 0.0, 1.0) - x

    captured: list[Tensor] = []

    def keep_layer_one_output(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
        output.retain_grad()
        captured.append(output)

    optimizer.zero_grad()
    total = 0.0
    for index in range(config.m):
        last = index == config.m - 1
        captured.clear()
        handle = model.layer_one.register_forward_hook(keep_layer_one_output)
        try:
            logits = forward(torch.clamp(x + eta, 0.0, 1.0))
        finally:
            handle.remove()
        if len(captured) != 1:
            raise RuntimeError(
                f"expected the forward pass to call model.layer_one once, it was called {len(captured)} times"
            )
        loss = F.cross_entropy(logits, y) / config.m
        total += check_finite(loss, step=step, batch=batch)  # mean CE over the m passes
        backward(loss)  # accumulates parameter gradients and fills z₁.grad
        if last:
            # The η that the last pass's n layer-one steps would produce feeds no further pass
            # and, as layer one gets no gradient from H here (NOTE above), nothing else: skip them.
            break
        costate = -captured[0].grad.detach()
        with frozen_norm_statistics(model.layer_one):
            eta = layer_one_steps(
                model.layer_one, x, eta, costate, sigma=config.sigma, epsilon=eps, steps=config.n
            )
    optimizer.step()
    metrics.update(
        loss=total, adv_loss=float(F.cross_entropy(logits.detach(), y).item()), adv_acc=_accuracy(logits, y)
    )
    return metrics


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

    Parameters
    ----------
    model : nn.Module
        The network; ``trades_yopo`` and ``yopo`` need its layer-one interface.
    x, y : Tensor
        Images in [0, 1] and labels, on the model's device.
    optimizer : optimizer-like
        Has ``zero_grad()`` and ``step()``: a ``torch.optim.Optimizer`` or, inside a
        LightningModule in manual optimization, ``self.optimizers()``.
    config : AdversarialConfig
        Method and settings.
    backward : callable, optional
        ``backward(loss)``; default ``loss.backward()``. Lightning: ``self.manual_backward``.
    train_model : callable, optional
        Computes the logits of the passes that produce parameter gradients
        (default ``model``), e.g. a DistributedDataParallel wrapper of ``model``.
        Attacks and costates always run on ``model`` itself.
    generator : torch.Generator, optional
        Random starts; the global RNG if None.
    step, batch : int, optional
        Indices for the message of :class:`NonFiniteLossError`.

    Returns
    -------
    dict of str to float
        ``loss`` (the optimized loss), ``clean_loss``, ``clean_acc`` and, for
        adversarial methods, ``adv_loss``, ``adv_acc`` (see :func:`adversarial_loss`;
        for ``yopo``: CE and accuracy of the last of the m passes).

    Raises
    ------
    NonFiniteLossError
        If a loss is NaN/inf; no optimizer step is taken then.

    Notes
    -----
    The model's train/eval mode on entry is restored on exit.
    """
    run_backward: Callable[[Tensor], Any] = backward if backward is not None else Tensor.backward
    forward = model if train_model is None else train_model
    was_training = model.training
    try:
        if config.method == "yopo":
            return _yopo_step(
                model,
                x,
                y,
                optimizer,
                config,
                backward=run_backward,
                forward=forward,
                generator=generator,
                step=step,
                batch=batch,
            )
        optimizer.zero_grad()
        loss, metrics = adversarial_loss(
            model, x, y, config, train_model=train_model, generator=generator, step=step, batch=batch
        )
        run_backward(loss)
        optimizer.step()
        return metrics
    finally:
        model.train(was_training)
