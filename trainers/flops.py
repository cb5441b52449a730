"""FLOPs of one forward pass, counted as ``torch.utils.flop_counter`` counts them, without importing it.

``torch.utils.flop_counter`` (and any ``TorchDispatchMode``) imports ``torch._dynamo`` and sympy
on first use: about 870 modules, seconds of a search trial's start-up (docs/architecture.md §12).
:func:`count_flops` counts the same operators with the same formulas (multiply-add = 2 FLOPs)
from forward hooks: every ``nn.Conv2d`` and ``nn.Linear``, and the two batched matrix products of
each :class:`~search_space.blocks.NonLocal` layer (its affinity and its weighted sum), which are
all the matrix products and convolutions the TAM-NAS networks run. A test checks it against
``FlopCounterMode`` on random architectures of two spaces.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from search_space.blocks import NonLocal

__all__ = ["count_flops"]


def _conv(m: nn.Conv2d, x: torch.Tensor, out: torch.Tensor) -> int:
    # flop_counter.conv_flop_count: output positions x kernel x c_out x c_in/groups x batch x 2
    c_out, c_in, *kernel = m.weight.shape
    return 2 * x.shape[0] * math.prod(out.shape[2:]) * math.prod(kernel) * c_out * c_in


def _non_local(m: NonLocal, x: torch.Tensor) -> int:
    # (b, hw, c_theta) @ (b, c_theta, hw), then (b, hw, hw) @ (b, hw, inner)
    b, c, h, w = x.shape
    hw = h * w
    c_theta = m.theta.out_channels if isinstance(m.theta, nn.Conv2d) else c
    return 2 * b * hw * hw * c_theta + 2 * b * hw * hw * m.g.out_channels


def count_flops(model: nn.Module, in_channels: int, resolution: int = 32) -> int:
    """Floating-point operations of one forward pass on one image (``torch.utils.flop_counter``'s count)."""
    total = 0

    def hook(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        nonlocal total
        x = args[0]
        if isinstance(m, nn.Conv2d):
            total += _conv(m, x, out)
        elif isinstance(m, nn.Linear):
            total += 2 * math.prod(x.shape[:-1]) * m.in_features * m.out_features
        elif isinstance(m, NonLocal):
            total += _non_local(m, x)

    handles = [m.register_forward_hook(hook) for m in model.modules()
               if isinstance(m, (nn.Conv2d, nn.Linear, NonLocal))]
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    try:
        with torch.no_grad():
            model(torch.zeros(1, in_channels, resolution, resolution, device=device))
    finally:
        model.train(was_training)
        for h in handles:
            h.remove()
    return int(total)
