"""Batch-norm recalibration for subnets that inherit supernet weights.

A subnet cut out of a one-shot supernet carries BN running statistics accumulated over many
different paths, so its eval-mode accuracy is misleading until the statistics are re-estimated
on its own activations (the standard one-shot NAS practice, e.g. SPOS). :func:`recalibrate_bn`
resets every BN layer's running mean/variance and re-estimates them as a cumulative average
(``momentum=None``) over ``batches`` training batches, in train mode and without gradients,
then leaves the model in eval mode. Nothing else changes: weights are untouched.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

import torch
from torch import Tensor, nn

__all__ = ["batch_norm_layers", "recalibrate_bn"]

logger = logging.getLogger(__name__)


def batch_norm_layers(model: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


def recalibrate_bn(model: nn.Module, loader: Iterable[tuple[Tensor, Tensor]] | Iterable[Tensor],
                   batches: int, *, device: torch.device | str | None = None,
                   progress: bool = False) -> nn.Module:
    """Re-estimate BN running statistics of ``model`` on ``batches`` batches of ``loader``.

    Parameters
    ----------
    model : nn.Module
        A standalone network (e.g. :func:`search_space.oneshot.inherit_subnet`); NNI's
        ``MixedBatchNorm2d`` does not support ``momentum=None``, so inherit a subnet first.
    loader : iterable
        Yields ``(images, labels)`` or images (training split).
    batches : int
        Number of batches; 0 leaves the statistics alone (only switches to eval mode).
    device : torch.device, optional
        Where to move the images (default: the model's parameters' device).
    progress : bool
        Show a progress bar.

    Returns
    -------
    nn.Module
        ``model`` itself, in eval mode.
    """
    if batches < 0:
        raise ValueError(f"batches must be >= 0, got {batches}")
    layers = batch_norm_layers(model)
    mixed = [type(m).__name__ for m in layers if type(m).__name__.startswith("Mixed")]
    if mixed:
        raise TypeError(f"recalibrate_bn: {mixed[0]} (an NNI mixed op) does not support cumulative "
                        "averaging; recalibrate a standalone subnet (search_space.oneshot.inherit_subnet)")
    if device is None:
        device = next((p.device for p in model.parameters()), torch.device("cpu"))
    if batches == 0 or not layers:
        return model.eval()
    momenta = [m.momentum for m in layers]
    for m in layers:
        m.reset_running_stats()
        m.momentum = None  # cumulative moving average over the recalibration batches
    model.train()
    seen = 0
    try:
        if progress:  # tqdm only when asked: the search trial imports as little as it can
            from tqdm.auto import tqdm

            loader = tqdm(loader, total=batches, desc="BN recalibration", leave=False)
        with torch.no_grad():
            for batch in loader:
                if seen >= batches:
                    break
                x = batch[0] if isinstance(batch, (tuple, list)) else batch
                model(x.to(device))
                seen += 1
    finally:
        for m, momentum in zip(layers, momenta, strict=True):
            m.momentum = momentum
        model.eval()
    if seen < batches:
        logger.warning("BN recalibration: loader gave %d batches, %d requested", seen, batches)
    return model
