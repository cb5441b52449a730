"""L∞ PGD attacks and the TRADES loss used for adversarial training.

Inputs are images in [0, 1]; normalization, if any, lives inside the model
(docs/architecture.md §5). Evaluation uses torchattacks (see :mod:`trainers.evaluation`),
except the search trial, which runs :func:`pgd_attack` with ``update="torchattacks"`` (the same
arithmetic, bit for bit, without importing torchattacks). The attacks here are the
training-time inner maximizations, written so that

* they never change the model's mode (the caller chooses eval or train mode);
* they take gradients with ``torch.autograd.grad`` with respect to the input
  only, so no parameter gradient is computed or accumulated;
* the random start can come from a seeded ``torch.Generator``.

With ``generator=None`` they draw their random start from the global RNG in
the same way as torchattacks' ``PGD`` and ``TPGD``, so on a fixed seed they
produce the same adversarial examples (tested in ``tests/test_attacks.py``).

References
----------
Madry et al., "Towards Deep Learning Models Resistant to Adversarial Attacks", ICLR 2018.
Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy"
(TRADES), ICML 2019.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

__all__ = [
    "TRADES_INIT_STD",
    "TradesLoss",
    "check_attack_settings",
    "linf_box",
    "normal_start",
    "pgd_attack",
    "project_linf",
    "trades_attack",
    "trades_kl",
    "trades_loss",
    "uniform_start",
]

# Standard deviation of the Gaussian start of the TRADES and TRADES-YOPO attacks (TRADES/YOPO code).
TRADES_INIT_STD: float = 0.001


def check_attack_settings(epsilon: float, step_size: float, steps: int, *, prefix: str = "") -> None:
    """Validate L∞ attack settings; raise ``ValueError`` naming the bad one.

    Parameters
    ----------
    epsilon : float
        Radius of the L∞ ball, in input units ([0, 1] images), ``0 <= epsilon <= 1``.
    step_size : float
        Step of each signed-gradient step, ``> 0``.
    steps : int
        Number of steps, ``>= 1``.
    prefix : str
        Prepended to the setting names in error messages (e.g. ``"eval."``).
    """
    if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not math.isfinite(epsilon):
        raise ValueError(f"{prefix}epsilon must be a finite number, got {epsilon!r}")
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"{prefix}epsilon must be in [0, 1] (inputs are in [0, 1]), got {epsilon!r}")
    if isinstance(step_size, bool) or not isinstance(step_size, (int, float)) or not math.isfinite(step_size):
        raise ValueError(f"{prefix}step_size must be a finite number, got {step_size!r}")
    if step_size <= 0:
        raise ValueError(f"{prefix}step_size must be > 0, got {step_size!r}")
    if isinstance(steps, bool) or not isinstance(steps, int):
        raise ValueError(f"{prefix}steps must be an int, got {steps!r}")
    if steps < 1:
        raise ValueError(f"{prefix}steps must be >= 1, got {steps!r}")


def linf_box(x: Tensor, epsilon: float) -> tuple[Tensor, Tensor]:
    """Bounds ``(max(x − ε, 0), min(x + ε, 1))`` of the ε-ball around ``x`` intersected with [0, 1].

    Projecting onto the ball and then onto [0, 1] is one ``clamp`` between these
    bounds; computing them once per batch keeps each attack step to three
    elementwise ops (sign, add, clamp), which matters on CPUs where the
    input-sized elementwise work is a visible share of a step.
    """
    return torch.clamp(x - epsilon, min=0.0), torch.clamp(x + epsilon, max=1.0)


def project_linf(x: Tensor, x_adv: Tensor, epsilon: float) -> Tensor:
    """Project ``x_adv`` onto the L∞ ball of radius ``epsilon`` around ``x`` and onto [0, 1]."""
    lower, upper = linf_box(x, epsilon)
    return torch.clamp(x_adv, min=lower, max=upper)


def uniform_start(x: Tensor, epsilon: float, generator: torch.Generator | None = None) -> Tensor:
    """A uniform random point of the L∞ ε-ball around ``x``, clipped to [0, 1] (PGD's and YOPO's start).

    With ``generator=None`` the draw is torchattacks' ``PGD`` one, so both agree on a fixed global seed.
    """
    if generator is None:
        noise = torch.empty_like(x).uniform_(-epsilon, epsilon)
    else:
        noise = (torch.rand(x.shape, generator=generator, device=x.device, dtype=x.dtype) * 2 - 1) * epsilon
    return torch.clamp(x + noise, min=0.0, max=1.0)


def normal_start(x: Tensor, std: float = TRADES_INIT_STD, generator: torch.Generator | None = None) -> Tensor:
    """``x + std · N(0, 1)`` clipped to [0, 1] (the start of TRADES and TRADES-YOPO).

    With ``generator=None`` the draw is torchattacks' ``TPGD`` one (and the TRADES reference code's).
    """
    if generator is None:
        noise = std * torch.randn_like(x)
    else:
        noise = std * torch.randn(x.shape, generator=generator, device=x.device, dtype=x.dtype)
    return torch.clamp(x + noise, min=0.0, max=1.0)


def pgd_attack(
    model: nn.Module,
    x: Tensor,
    y: Tensor,
    *,
    epsilon: float,
    step_size: float,
    steps: int,
    random_start: bool = True,
    generator: torch.Generator | None = None,
    update: str = "box",
) -> Tensor:
    """Untargeted L∞ PGD on the cross-entropy loss (Madry et al. 2018).

    The model's mode is left as it is: put it in eval mode first for the usual
    attack (BN running statistics untouched), or keep train mode on purpose.

    Parameters
    ----------
    model : nn.Module
        Maps images in [0, 1] to logits.
    x : Tensor
        Clean images, shape (N, C, H, W), values in [0, 1].
    y : Tensor
        Labels, shape (N,).
    epsilon : float
        L∞ radius in input units (e.g. 8/255).
    step_size : float
        Signed-gradient step α in input units (e.g. 2/255).
    steps : int
        Number of PGD steps.
    random_start : bool
        Start from a uniform random point of the ε-ball (Madry et al.).
    generator : torch.Generator, optional
        Source of the random start; the global RNG if None.
    update : {"box", "torchattacks"}
        How a step is projected. ``"box"``: one clamp between the precomputed bounds of
        :func:`linf_box` (fewest elementwise ops; equal to torchattacks up to float rounding).
        ``"torchattacks"``: torchattacks' ``PGD`` arithmetic, ``x + clamp(x' + α·sign(g) − x, ±ε)``
        then [0, 1], which gives bit-identical examples to ``torchattacks.PGD`` on the same seed
        (the search trial's attack, so its numbers equal the torchattacks-based evaluation's).

    Returns
    -------
    Tensor
        Detached adversarial images in the ε-ball around ``x`` and in [0, 1].
    """
    check_attack_settings(epsilon, step_size, steps)
    if update not in ("box", "torchattacks"):
        raise ValueError(f"update must be 'box' or 'torchattacks', got {update!r}")
    x = x.detach()
    lower, upper = linf_box(x, epsilon)
    x_adv = uniform_start(x, epsilon, generator) if random_start else x.clone()
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = F.cross_entropy(model(x_adv), y)
        (grad,) = torch.autograd.grad(loss, x_adv)
        if update == "box":
            x_adv = torch.clamp(torch.add(x_adv.detach(), grad.sign(), alpha=step_size), min=lower, max=upper)
        else:
            delta = torch.clamp(x_adv.detach() + step_size * grad.sign() - x, min=-epsilon, max=epsilon)
            x_adv = torch.clamp(x + delta, min=0.0, max=1.0)
    return x_adv.detach()


def trades_kl(logits_clean: Tensor, logits_adv: Tensor, *, reduction: str = "batchmean") -> Tensor:
    """KL(softmax(f(x)) ‖ softmax(f(x'))), the TRADES robustness term.

    Parameters
    ----------
    logits_clean, logits_adv : Tensor
        Logits on clean and perturbed inputs, shape (N, K).
    reduction : {"batchmean", "sum", "none"}
        ``"batchmean"`` for the training loss, ``"sum"`` for the attack (the
        TRADES and YOPO reference code; only the gradient's sign matters there).
    """
    log_p_adv = F.log_softmax(logits_adv, dim=1)
    # The clean distribution as log-probabilities: with p = softmax(·), a class whose probability
    # underflows to 0 (a logit gap over ~104 in float32) makes ∂KL/∂p = log 0 = -inf and the
    # softmax's backward 0 · inf = NaN, a NaN gradient under a finite loss (seen on a GPU).
    log_p_clean = F.log_softmax(logits_clean, dim=1)
    if reduction == "none":
        return F.kl_div(log_p_adv, log_p_clean, reduction="none", log_target=True).sum(dim=1)
    return F.kl_div(log_p_adv, log_p_clean, reduction=reduction, log_target=True)


class TradesLoss(NamedTuple):
    """TRADES loss and its two terms (all scalar tensors)."""

    total: Tensor
    natural: Tensor
    robust: Tensor


def trades_loss(
    logits_clean: Tensor, logits_adv: Tensor, y: Tensor, *, trades_lambda: float = 1.0
) -> TradesLoss:
    """TRADES loss of paper Eq. (3): CE(f(x), y) + KL(f(x) ‖ f(x+η)) / λ.

    The clean distribution is *not* detached in the KL term, as in the TRADES
    and YOPO reference code. λ = 1 in the paper (TRADES' β = 1/λ).
    """
    if not trades_lambda > 0:
        raise ValueError(f"trades_lambda must be > 0, got {trades_lambda!r}")
    natural = F.cross_entropy(logits_clean, y)
    robust = trades_kl(logits_clean, logits_adv, reduction="batchmean")
    return TradesLoss(natural + robust / trades_lambda, natural, robust)


def trades_attack(
    model: nn.Module,
    x: Tensor,
    *,
    epsilon: float,
    step_size: float,
    steps: int,
    init_std: float = TRADES_INIT_STD,
    clean_logits: Tensor | None = None,
    generator: torch.Generator | None = None,
) -> Tensor:
    """TRADES' inner maximization: L∞ PGD ascent on KL(f(x) ‖ f(x')).

    Starts at ``x + init_std · N(0, 1)`` (TRADES reference code; torchattacks' TPGD),
    then ``steps`` signed-gradient steps on the summed KL to the clean prediction,
    each followed by projection onto the ε-ball and [0, 1]. Labels are not used.
    The model's mode is left as it is (TRADES attacks in eval mode).

    Parameters
    ----------
    model : nn.Module
        Maps images in [0, 1] to logits.
    x : Tensor
        Clean images in [0, 1].
    epsilon, step_size, steps
        L∞ radius, step and number of steps, in input units.
    init_std : float
        Standard deviation of the Gaussian start.
    clean_logits : Tensor, optional
        ``model(x)`` if already computed (no gradient needed).
    generator : torch.Generator, optional
        Source of the random start; the global RNG if None.

    Returns
    -------
    Tensor
        Detached adversarial images.
    """
    check_attack_settings(epsilon, step_size, steps)
    x = x.detach()
    if clean_logits is None:
        with torch.no_grad():
            clean_logits = model(x)
    clean_logits = clean_logits.detach()
    lower, upper = linf_box(x, epsilon)
    x_adv = normal_start(x, init_std, generator)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        loss = trades_kl(clean_logits, model(x_adv), reduction="sum")
        (grad,) = torch.autograd.grad(loss, x_adv)
        x_adv = torch.clamp(torch.add(x_adv.detach(), grad.sign(), alpha=step_size), min=lower, max=upper)
    return x_adv.detach()
