"""The five training methods, one class each, behind one interface and a name → class registry.

=========== ====================================================================
method      what one step does
=========== ====================================================================
clean       CE on clean images.
pgd_at      Madry PGD-AT: PGD-k on CE (eval mode), then CE on the adversarial images.
trades      TRADES: PGD-k on KL (eval mode), then CE(f(x)) + KL(f(x) ‖ f(x'))/λ.
trades_yopo TRADES-YOPO-m-n (paper §III-D, docs/architecture.md §5): the YOPO m × n inner
            maximization of the KL (eval mode), then the TRADES loss.
yopo        YOPO-m-n: m full CE passes in train mode whose parameter gradients
            are accumulated (averaged), each but the last followed by n layer-one
            steps on η.
=========== ====================================================================

Every method is a :class:`TrainingMethod` built from an
:class:`~trainers.adversarial.AdversarialConfig` (``training_method(config)``, or
``TRAINING_METHODS[name](config)``) and has

* :meth:`TrainingMethod.step` -- the whole step: ``optimizer.zero_grad()``, attack, loss,
  backward(s), ``optimizer.step()``; returns float metrics. A plain loop passes a
  ``torch.optim.Optimizer``; a LightningModule in manual optimization passes
  ``self.optimizers()`` and ``backward=self.manual_backward``;
* :meth:`TrainingMethod.loss` -- the loss tensor without backward or optimizer call, for the
  methods with a single backward (all but ``yopo``);
* :meth:`TrainingMethod.label` -- the paper-style name (``TRADES-YOPO-5-3``), from the class's
  :attr:`~TrainingMethod.LABEL` template.

Non-finite losses raise :class:`NonFiniteLossError` before any backward, with the
step/batch index in the message, instead of training on NaN.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainers.attacks import TRADES_INIT_STD, pgd_attack, trades_attack, trades_loss, uniform_start
from trainers.yopo import (
    check_layer_one_interface,
    frozen_norm_statistics,
    layer_one_steps,
    trades_yopo_perturbation,
)

if TYPE_CHECKING:
    from trainers.adversarial import AdversarialConfig

__all__ = [
    "METHODS",
    "TRAINING_METHODS",
    "NonFiniteLossError",
    "TrainingMethod",
    "check_finite",
    "training_method",
]

Forward = Callable[[Tensor], Tensor]


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


class OptimizerLike(Protocol):
    """``torch.optim.Optimizer`` or Lightning's ``LightningOptimizer``."""

    def zero_grad(self, set_to_none: bool = ...) -> None: ...

    def step(self, closure: Any = ...) -> Any: ...


def _accuracy(logits: Tensor, y: Tensor) -> float:
    return float((logits.detach().argmax(dim=1) == y).float().mean().item())


def _eval_clean_metrics(model: nn.Module, x: Tensor, y: Tensor) -> dict[str, float]:
    """Clean CE and accuracy in eval mode (one extra forward: the method itself never trains on x)."""
    model.eval()
    with torch.no_grad():
        logits = model(x)
    return {"clean_loss": float(F.cross_entropy(logits, y).item()), "clean_acc": _accuracy(logits, y)}


class TrainingMethod:
    """One training method; subclasses set :attr:`name`, :attr:`LABEL` and implement :meth:`loss` (or :meth:`_step`)."""

    name: ClassVar[str]
    # paper-style name, formatted with the config's fields, e.g. "PGD-AT-{steps}"
    LABEL: ClassVar[str]

    def __init__(self, config: AdversarialConfig) -> None:
        self.config = config

    def label(self) -> str:
        """Paper-style name, e.g. ``TRADES-YOPO-5-3`` or ``PGD-AT-10``."""
        return self.LABEL.format_map(vars(self.config))

    def loss(self, model: nn.Module, x: Tensor, y: Tensor, *, train_model: Forward | None = None,
             generator: torch.Generator | None = None, step: int | None = None,
             batch: int | None = None) -> tuple[Tensor, dict[str, float]]:
        """Attack (if any) and the training loss of one batch, without backward or step.

        The attack runs with the model in eval mode; the model is left in **train mode** for the
        returned loss. ``train_model`` computes the training logits (default ``model``, e.g. a
        DistributedDataParallel wrapper of it); attacks always use ``model``.

        Returns
        -------
        loss : Tensor
            Scalar training loss (finite, checked).
        metrics : dict of str to float
            ``loss``, ``clean_loss``, ``clean_acc``, and for adversarial methods ``adv_loss`` (CE
            on x' for ``pgd_at``, the KL term for TRADES) and ``adv_acc`` (train-time accuracy
            on x'). Accuracies are in [0, 1].
        """
        return self._loss(model, x.detach(), y, model if train_model is None else train_model, generator,
                          (step, batch))

    def _loss(self, model: nn.Module, x: Tensor, y: Tensor, forward: Forward, generator: torch.Generator | None,
              where: tuple[int | None, int | None]) -> tuple[Tensor, dict[str, float]]:
        raise NotImplementedError

    def step(self, model: nn.Module, x: Tensor, y: Tensor, optimizer: OptimizerLike, *,
             generator: torch.Generator | None = None, backward: Callable[[Tensor], Any] | None = None,
             train_model: Forward | None = None, step: int | None = None,
             batch: int | None = None) -> dict[str, float]:
        """One full training step: zero_grad, attack, loss, backward(s), optimizer step.

        Parameters
        ----------
        model : nn.Module
            The network; ``trades_yopo`` and ``yopo`` need its layer-one interface.
        x, y : Tensor
            Images in [0, 1] and labels, on the model's device.
        optimizer : optimizer-like
            Has ``zero_grad()`` and ``step()``.
        generator : torch.Generator, optional
            Random starts; the global RNG if None.
        backward : callable, optional
            ``backward(loss)``; default ``loss.backward()``. Lightning: ``self.manual_backward``.
        train_model : callable, optional
            Computes the logits of the passes that produce parameter gradients (default ``model``).
        step, batch : int, optional
            Indices for the message of :class:`NonFiniteLossError`.

        Returns
        -------
        dict of str to float
            The metrics of :meth:`loss` (for ``yopo``: CE and accuracy of the last of the m passes).

        Raises
        ------
        NonFiniteLossError
            If a loss is NaN/inf; no optimizer step is taken then.

        Notes
        -----
        The model's train/eval mode on entry is restored on exit.
        """
        run_backward = backward if backward is not None else Tensor.backward
        forward = model if train_model is None else train_model
        was_training = model.training
        try:
            return self._step(model, x.detach(), y, optimizer, run_backward, forward, generator, step, batch)
        finally:
            model.train(was_training)

    def _step(self, model: nn.Module, x: Tensor, y: Tensor, optimizer: OptimizerLike,
              backward: Callable[[Tensor], Any], forward: Forward, generator: torch.Generator | None,
              step: int | None, batch: int | None) -> dict[str, float]:
        optimizer.zero_grad()
        loss, metrics = self._loss(model, x, y, forward, generator, (step, batch))
        backward(loss)
        optimizer.step()
        return metrics


class Clean(TrainingMethod):
    """Cross-entropy on the clean images."""

    name, LABEL = "clean", "clean"

    def _loss(self, model, x, y, forward, generator, where):
        model.train()
        logits = forward(x)
        loss = F.cross_entropy(logits, y)
        value = check_finite(loss, step=where[0], batch=where[1])
        return loss, {"loss": value, "clean_loss": value, "clean_acc": _accuracy(logits, y)}


class PgdAT(TrainingMethod):
    """Madry et al.'s PGD-AT: PGD-k on CE in eval mode, then CE on the adversarial images."""

    name, LABEL = "pgd_at", "PGD-AT-{steps}"

    def _loss(self, model, x, y, forward, generator, where):
        c = self.config
        metrics = _eval_clean_metrics(model, x, y)
        x_adv = pgd_attack(model, x, y, epsilon=c.epsilon, step_size=c.step_size, steps=c.steps,
                           generator=generator)
        model.train()
        adv_logits = forward(x_adv)
        loss = F.cross_entropy(adv_logits, y)
        value = check_finite(loss, step=where[0], batch=where[1])
        metrics.update(loss=value, adv_loss=value, adv_acc=_accuracy(adv_logits, y))
        return loss, metrics


class Trades(TrainingMethod):
    """TRADES: an attack on the KL in eval mode (:meth:`attack`), then CE + KL/λ in train mode."""

    name, LABEL = "trades", "TRADES-PGD-{steps}"

    def attack(self, model: nn.Module, x: Tensor, generator: torch.Generator | None) -> Tensor:
        """TRADES' PGD-k on the KL; the model is in eval mode."""
        c = self.config
        return trades_attack(model, x, epsilon=c.epsilon, step_size=c.step_size, steps=c.steps,
                             init_std=TRADES_INIT_STD, generator=generator)

    def _loss(self, model, x, y, forward, generator, where):
        model.eval()
        x_adv = self.attack(model, x, generator)
        model.train()
        clean_logits = forward(x)
        adv_logits = forward(x_adv)
        terms = trades_loss(clean_logits, adv_logits, y, trades_lambda=self.config.trades_lambda)
        value = check_finite(terms.total, step=where[0], batch=where[1])
        return terms.total, {
            "loss": value,
            "clean_loss": float(terms.natural.item()),
            "clean_acc": _accuracy(clean_logits, y),
            "adv_loss": float(terms.robust.item()),
            "adv_acc": _accuracy(adv_logits, y),
        }


class TradesYopo(Trades):
    """TRADES-YOPO-m-n: the TRADES loss with YOPO's m × n inner maximization of the KL."""

    name, LABEL = "trades_yopo", "TRADES-YOPO-{m}-{n}"

    def attack(self, model: nn.Module, x: Tensor, generator: torch.Generator | None) -> Tensor:
        check_layer_one_interface(model)
        c = self.config
        eta, _ = trades_yopo_perturbation(model, x, epsilon=c.epsilon, sigma=c.sigma, m=c.m, n=c.n,
                                          init_std=TRADES_INIT_STD, generator=generator)
        return torch.clamp(x + eta, 0.0, 1.0)


class Yopo(TrainingMethod):
    """YOPO-m-n (Zhang et al. 2019, Alg. 1 with CE): one optimizer step after m passes.

    Passes 1 … m−1 are each followed by n layer-one steps on η; the last pass is not, since
    nothing would use the η they produce: m full passes and (m − 1)·n layer-one steps per step.

    # NOTE: the reference code sums the m pass losses and divides the learning
    # rate by m/2; we average them (loss/m), so one learning rate fits all methods.
    # Layer one's parameters get the gradient of the full passes only (the
    # reference additionally back-propagates −H at the final η into layer one).
    """

    name, LABEL = "yopo", "YOPO-{m}-{n}"

    def _loss(self, model, x, y, forward, generator, where):
        raise ValueError(
            "method 'yopo' accumulates gradients over m passes: use its step() (adversarial_step), not loss() "
            "(adversarial_loss)"
        )

    def _step(self, model, x, y, optimizer, backward, forward, generator, step, batch):
        check_layer_one_interface(model)
        c = self.config
        metrics = _eval_clean_metrics(model, x, y)
        model.train()  # the m passes are training passes, as in the reference code
        eta = uniform_start(x, c.epsilon, generator) - x
        captured: list[Tensor] = []

        def keep_layer_one_output(_module: nn.Module, _inputs: Any, output: Tensor) -> None:
            output.retain_grad()
            captured.append(output)

        optimizer.zero_grad()
        total = 0.0
        for index in range(c.m):
            captured.clear()
            handle = model.layer_one.register_forward_hook(keep_layer_one_output)
            try:
                logits = forward(torch.clamp(x + eta, 0.0, 1.0))
            finally:
                handle.remove()
            if len(captured) != 1:
                raise RuntimeError(f"expected the forward pass to call model.layer_one once, it was called "
                                   f"{len(captured)} times")
            loss = F.cross_entropy(logits, y) / c.m
            total += check_finite(loss, step=step, batch=batch)  # mean CE over the m passes
            backward(loss)  # accumulates parameter gradients and fills z₁.grad
            if index == c.m - 1:
                # The η that the last pass's n layer-one steps would produce feeds no further pass
                # and, as layer one gets no gradient from H here (NOTE above), nothing else: skip them.
                break
            costate = -captured[0].grad.detach()
            with frozen_norm_statistics(model.layer_one):
                eta = layer_one_steps(model.layer_one, x, eta, costate, sigma=c.sigma, epsilon=c.epsilon,
                                      steps=c.n)
        optimizer.step()
        metrics.update(loss=total, adv_loss=float(F.cross_entropy(logits.detach(), y).item()),
                       adv_acc=_accuracy(logits, y))
        return metrics


TRAINING_METHODS: dict[str, type[TrainingMethod]] = {cls.name: cls for cls in (Clean, PgdAT, Trades, TradesYopo, Yopo)}
METHODS: tuple[str, ...] = tuple(TRAINING_METHODS)


def training_method(config: AdversarialConfig) -> TrainingMethod:
    """The :class:`TrainingMethod` of ``config.method``, set up with ``config``."""
    return TRAINING_METHODS[config.method](config)
