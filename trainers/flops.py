"""FLOPs of one forward pass, counted as ``torch.utils.flop_counter`` counts them, without importing it.

``torch.utils.flop_counter`` imports ``torch._dynamo`` and sympy (about 870 modules, seconds of a
search trial's start-up; docs/architecture.md §13). :func:`count_flops` counts the same operators
with the same formulas (multiply-add = 2 FLOPs) in a ``TorchDispatchMode``: matrix products
(``mm``, ``addmm``, ``bmm``, ``baddbmm``) and convolutions. A test checks it against
``FlopCounterMode`` on random architectures.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.utils._python_dispatch import TorchDispatchMode

__all__ = ["count_flops"]

_aten = torch.ops.aten


def _mm(a: torch.Tensor, b: torch.Tensor) -> int:
    m, k = a.shape
    return 2 * m * k * b.shape[1]


def _bmm(a: torch.Tensor, b: torch.Tensor) -> int:
    n, m, k = a.shape
    return 2 * n * m * k * b.shape[2]


def _conv(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, transposed: bool) -> int:
    # flop_counter.conv_flop_count: every output (input if transposed) position x filter x c_out x c_in/groups
    spatial = (x.shape if transposed else out.shape)[2:]
    c_out, c_in, *kernel = w.shape
    return 2 * x.shape[0] * math.prod(spatial) * math.prod(kernel) * c_out * c_in


class _Counter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.total = 0

    def __torch_dispatch__(self, func: Any, types: Any, args: tuple = (), kwargs: dict | None = None) -> Any:
        out = func(*args, **(kwargs or {}))
        packet = func.overloadpacket
        if packet is _aten.mm:
            self.total += _mm(args[0], args[1])
        elif packet is _aten.addmm:
            self.total += _mm(args[1], args[2])
        elif packet is _aten.bmm:
            self.total += _bmm(args[0], args[1])
        elif packet is _aten.baddbmm:
            self.total += _bmm(args[1], args[2])
        elif packet in (_aten.convolution, _aten._convolution):
            self.total += _conv(args[0], args[1], out, bool(args[6]))
        return out


def count_flops(model: torch.nn.Module, in_channels: int, resolution: int = 32) -> int:
    """Floating-point operations of one forward pass on one image (``torch.utils.flop_counter``'s count)."""
    was_training = model.training
    model.eval()
    device = next((p.device for p in model.parameters()), torch.device("cpu"))
    counter = _Counter()
    try:
        with torch.no_grad(), counter:
            model(torch.zeros(1, in_channels, resolution, resolution, device=device))
    finally:
        model.train(was_training)
    return int(counter.total)
