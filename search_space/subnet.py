"""Standalone subnets of the TAM-NAS space (paper Table I) in plain PyTorch: no NNI mutables.

Layout for 32x32 inputs, ``C`` scaled by the width multiplier::

    layer one: 3x3 conv (24) + BN + ReLU
    layer_0 .. layer_3   choice blocks, 48C, stride 2 then 1
    layer_4 .. layer_11  choice blocks, 96C, stride 2 then 1
    layer_12 .. layer_15 choice blocks, 192C, stride 2 then 1
    head: 1x1 conv 176 + BN + ReLU -> global pool -> SE(176) -> 1x1 conv 920 + ReLU
          -> 1x1 conv 1024 + ReLU -> FC classes

NOTE: Table I's head row "SE" maps 1x1x176 to 1x1x920, but an SE layer keeps its width. We read
the row as an SE gate on the 176 pooled features followed by a 1x1 conv to 920 channels, so that
the next row (1x1 conv 920 -> 1024) gets the input the table gives it. The width multiplier
scales the three stages only: the stem and the head keep Table I's widths.

"Layer one" for YOPO (docs/architecture.md §5) is ``layer_one``: the stem conv with its BN and ReLU.
Inputs stay in [0, 1]; the model does no input normalization (the stem's BN takes care of scale).

This module imports torch and :mod:`search_space.blocks` only (no ``nni.nas``), so the search
trial builds its subnet without NNI's one-shot machinery (docs/architecture.md §13); the
supernet (:mod:`search_space.supernet`) reuses the stem and the head from here.
"""

from __future__ import annotations

import torch
from torch import nn

from .architecture import Architecture
from .blocks import SqueezeExcitation, build_block, init_weights
from .params import HEAD_CHANNELS, STEM_CHANNELS
from .space import NUM_LAYERS, SpaceConfig, layer_channels, layer_stride

__all__ = ["Head", "Subnet", "build_subnet", "make_layer_one"]


def make_layer_one(in_channels: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(in_channels, STEM_CHANNELS, 3, 1, 1, bias=False),
        nn.BatchNorm2d(STEM_CHANNELS),
        nn.ReLU(),
    )


class Head(nn.Module):
    """Table I's head (see the module docstring for how the SE row is read)."""

    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        c1, c2, c3 = HEAD_CHANNELS
        self.conv = nn.Sequential(nn.Conv2d(in_channels, c1, 1, bias=False), nn.BatchNorm2d(c1), nn.ReLU())
        self.se = SqueezeExcitation(c1)
        self.expand = nn.Sequential(nn.Conv2d(c1, c2, 1), nn.ReLU(), nn.Conv2d(c2, c3, 1), nn.ReLU())
        self.fc = nn.Linear(c3, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.nn.functional.adaptive_avg_pool2d(self.conv(x), 1)
        x = self.expand(self.se(x))
        return self.fc(x.flatten(1))


class Subnet(nn.Module):
    """A standalone subnet: plain PyTorch modules, no NNI mutables, exportable to TorchScript/ONNX.

    ``init=False`` skips the weight initialisation (and its draws from the global RNG) for a
    subnet whose every tensor is loaded next.
    """

    def __init__(self, arch: Architecture, space: SpaceConfig, *, init: bool = True) -> None:
        super().__init__()
        self.arch = arch
        self.space_config = space
        self.layer_one = make_layer_one(space.in_channels)
        self.features = nn.Sequential(*[
            build_block(b, *layer_channels(i, space.width_multiplier), layer_stride(i), r)
            for i, (b, r) in enumerate(zip(arch.blocks, arch.ratios, strict=True))
        ])
        self.head = Head(layer_channels(NUM_LAYERS - 1, space.width_multiplier)[1], space.num_classes)
        if init:
            init_weights(self)

    def forward_from_layer_one(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from_layer_one(self.layer_one(x))


def build_subnet(arch: Architecture, space: SpaceConfig | None = None) -> Subnet:
    """A freshly initialised standalone subnet for ``arch`` (default space: Fashion-MNIST, width 1)."""
    return Subnet(arch, space or SpaceConfig())
