"""YOPO building blocks: layer-one Hamiltonian, costate and the m × n perturbation loops.

YOPO ("You Only Propagate Once", Zhang et al., NeurIPS 2019) treats the network
as a dynamical system whose first layer ("layer one", ``z₁ = f₀(x + η)``) is the
only one coupled with the perturbation η. By Pontryagin's maximum principle the
attack can then be run as:

* ``m`` outer iterations, each one full forward/backward that gives the costate
  ``p = −∂L/∂z₁`` at the layer-one output;
* ``n`` inner iterations per outer one, with ``p`` fixed, each running only layer
  one: ``H(η) = Σ f₀(clip(x + η)) ⊙ p``, ``η ← η − σ·sign(∂H/∂η)``, then projection
  onto the ε-ball and onto [0, 1].

Because ``∂H/∂η = −∂L/∂η`` at the point where ``p`` was taken, the first inner step
is exactly a PGD ascent step on L; the following ``n − 1`` reuse ``p`` (the YOPO
approximation). The TAM-NAS paper (§III-D) trains with TRADES-YOPO-m-n, m = 5,
n = 3. Models expose layer one through ``model.layer_one`` and
``model.forward_from_layer_one`` (see :mod:`trainers.models`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from trainers.attacks import TRADES_INIT_STD, check_attack_settings, linf_box, normal_start

__all__ = [
    "check_layer_one_interface",
    "check_yopo_settings",
    "frozen_norm_statistics",
    "hamiltonian",
    "kl_costate",
    "layer_one_steps",
    "trades_yopo_perturbation",
]


def check_layer_one_interface(model: nn.Module) -> None:
    """Raise ``TypeError`` unless ``model`` exposes YOPO's layer one.

    The interface (fixed project-wide): ``model.layer_one`` is an ``nn.Module``
    and ``model.forward_from_layer_one(z)`` runs the rest of the network, with
    ``model(x) == model.forward_from_layer_one(model.layer_one(x))``.
    """
    layer_one = getattr(model, "layer_one", None)
    if not isinstance(layer_one, nn.Module):
        raise TypeError(
            f"{type(model).__name__} has no attribute 'layer_one' of type nn.Module; YOPO needs "
            "'layer_one' (stem conv + BN + ReLU) and 'forward_from_layer_one(z)'"
        )
    if not callable(getattr(model, "forward_from_layer_one", None)):
        raise TypeError(
            f"{type(model).__name__} has no method 'forward_from_layer_one(z)'; YOPO needs it "
            "to run the network from the layer-one output"
        )


@contextlib.contextmanager
def frozen_norm_statistics(module: nn.Module) -> Iterator[None]:
    """Keep the running statistics of normalization layers in ``module`` unchanged.

    Plain YOPO runs its inner steps in train mode (batch statistics, as in the
    full passes they linearize), but those ``n`` extra layer-one forwards must not
    move the running mean/variance. Momentum 0 makes the update a no-op; the
    batch counter is restored afterwards.
    """
    saved: list[tuple[nn.Module, float | None, Tensor | None]] = []
    for sub in module.modules():
        if getattr(sub, "track_running_stats", False) and hasattr(sub, "momentum"):
            counter = getattr(sub, "num_batches_tracked", None)
            saved.append((sub, sub.momentum, None if counter is None else counter.clone()))
            sub.momentum = 0.0
    try:
        yield
    finally:
        for sub, momentum, counter in saved:
            sub.momentum = momentum
            if counter is not None:
                sub.num_batches_tracked.copy_(counter)


def check_yopo_settings(*, epsilon: float, sigma: float, m: int, n: int) -> None:
    """Validate YOPO-m-n settings; raise ``ValueError`` naming the bad one."""
    # Only epsilon is checked there; step_size and steps are placeholders.
    check_attack_settings(epsilon, 1.0, 1)
    for name, value in (("m", m), ("n", n)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be an int >= 1, got {value!r}")
    if (
        isinstance(sigma, bool)
        or not isinstance(sigma, (int, float))
        or not sigma > 0
        or sigma == float("inf")
    ):
        raise ValueError(f"sigma must be a finite number > 0, got {sigma!r}")


def hamiltonian(layer_one: nn.Module, x_adv: Tensor, costate: Tensor) -> Tensor:
    """Layer-one Hamiltonian ``H = Σ f₀(x + η) ⊙ p`` (YOPO Eq. 8, summed over the batch).

    Takes the perturbed input ``x_adv = clip(x + η, 0, 1)`` itself, so that
    ``∂H/∂η = ∂H/∂x_adv`` inside the box.
    """
    return (layer_one(x_adv) * costate).sum()


def layer_one_steps(
    layer_one: nn.Module,
    x: Tensor,
    eta: Tensor,
    costate: Tensor,
    *,
    sigma: float,
    epsilon: float,
    steps: int,
) -> Tensor:
    """YOPO's ``n`` inner steps with the costate fixed; only layer one is run.

    ``η ← η − σ·sign(∂H/∂η)``, then η is clipped to the ε-ball and ``x + η`` to [0, 1].
    Gradients are taken with ``torch.autograd.grad`` w.r.t. the input only: layer
    one's parameters get no gradient.

    # NOTE: the YOPO reference code evaluates H at clamp(x + η) and differentiates
    # through the clamp, whose gradient is 0 at the bounds: pixels sitting at 0 or 1
    # (Fashion-MNIST's black background, or x + η rounding to 1 + ulp) would never
    # move. We differentiate at the clipped point x' = clip(x + η) instead -- the
    # same step PGD takes -- so TRADES-YOPO-k-1 is exactly TRADES' PGD-k.

    Returns
    -------
    Tensor
        The detached new perturbation η.
    """
    costate = costate.detach()
    x = x.detach()
    lower, upper = linf_box(x, epsilon)
    x_adv = torch.clamp(x + eta.detach(), min=lower, max=upper)
    for _ in range(steps):
        x_adv.requires_grad_(True)
        # ∂H/∂x' as a vector-Jacobian product J₀ᵀp: same as differentiating hamiltonian(),
        # without materializing z₁ ⊙ p and its backward (layer-one steps are memory-bound).
        (grad,) = torch.autograd.grad(layer_one(x_adv), x_adv, grad_outputs=costate)
        x_adv = torch.clamp(torch.add(x_adv.detach(), grad.sign(), alpha=-sigma), min=lower, max=upper)
    return (x_adv - x).detach()


def kl_costate(model: nn.Module, x: Tensor, eta: Tensor, clean_probs: Tensor) -> tuple[Tensor, Tensor]:
    """Costate ``p = −∂L/∂z₁`` of TRADES' attack loss ``L = KL(q ‖ f(x + η))`` (summed).

    Layer one runs without a graph; the backward starts at the logits and stops
    at ``z₁`` (``torch.autograd.grad``), so no parameter gradient is computed and
    layer one is not back-propagated through.

    Parameters
    ----------
    model : nn.Module
        A model with ``layer_one`` / ``forward_from_layer_one``.
    x, eta : Tensor
        Clean images and the current perturbation.
    clean_probs : Tensor
        ``q = softmax(f(x))``, detached.

    Returns
    -------
    costate : Tensor
        Detached ``p``, shaped like the layer-one output.
    logits : Tensor
        Detached ``f(clip(x + η))``.
    """
    with torch.no_grad():
        z1 = model.layer_one(torch.clamp(x + eta, 0.0, 1.0))
    z1.requires_grad_(True)
    logits = model.forward_from_layer_one(z1)
    loss = F.kl_div(F.log_softmax(logits, dim=1), clean_probs, reduction="sum")
    (grad,) = torch.autograd.grad(loss, z1)
    return -grad.detach(), logits.detach()


def trades_yopo_perturbation(model: nn.Module, x: Tensor, *, epsilon: float, sigma: float, m: int, n: int,
                             init_std: float = TRADES_INIT_STD,
                             generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """TRADES-YOPO-m-n inner maximization: the perturbation η for one batch.

    Follows docs/architecture.md §5 and the YOPO reference code (CIFAR10-TRADES experiments):
    η starts at ``init_std · N(0, 1)``; ``q = softmax(f(x))`` without gradient; then
    ``m`` times: costate ``p = −∂KL(q ‖ f(x+η))/∂z₁`` (:func:`kl_costate`), and ``n``
    layer-one steps with ``p`` fixed (:func:`layer_one_steps`). The model's mode is
    left as it is; the caller puts it in eval mode.

    # NOTE: the start is clipped so that x + η is in [0, 1] from the outset, and
    # every full forward sees clip(x + η) -- the reference code clips only inside
    # the Hamiltonian. With :func:`layer_one_steps` this makes ∂H/∂η = −∂L/∂η exact
    # at the first inner step.

    Returns
    -------
    eta : Tensor
        Detached perturbation, ``|η| <= ε`` and ``x + η`` in [0, 1].
    clean_logits : Tensor
        Detached ``f(x)`` in the model's current mode.
    """
    check_yopo_settings(epsilon=epsilon, sigma=sigma, m=m, n=n)
    x = x.detach()
    with torch.no_grad():
        clean_logits = model(x)
    clean_probs = F.softmax(clean_logits, dim=1)
    eta = normal_start(x, init_std, generator) - x
    for _ in range(m):
        costate, _ = kl_costate(model, x, eta, clean_probs)
        eta = layer_one_steps(model.layer_one, x, eta, costate, sigma=sigma, epsilon=epsilon, steps=n)
    return eta, clean_logits
