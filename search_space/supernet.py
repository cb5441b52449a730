"""The TAM-NAS search space as an NNI ``ModelSpace`` (paper Table I).

The layout (stem, three stages of choice blocks, head) and the standalone :class:`Subnet` live in
:mod:`search_space.subnet` (plain PyTorch, no ``nni.nas``); they are re-exported here. This module
is where NNI's ``LayerChoice`` and mutable ops enter: import it only to build the supernet.
"""

from __future__ import annotations

import nni
import torch
from nni.nas.nn.pytorch import LayerChoice, ModelSpace
from torch import nn

from .blocks import build_block, init_weights
from .space import (
    NUM_LAYERS,
    RATIOS,
    SpaceConfig,
    allowed_blocks,
    layer_channels,
    layer_stride,
)
from .subnet import Head, Subnet, build_subnet, make_layer_one

__all__ = ["Head", "Subnet", "TamNasSpace", "build_subnet", "make_layer_one"]


class TamNasSpace(ModelSpace):
    """ShuffleNetV2-based TAM-NAS supernet: 16 ``LayerChoice`` (``layer_i``) x ratio (``ratio_i``).

    Parameters
    ----------
    dataset : str
        ``"cifar10"``, ``"svhn"`` or ``"fashion_mnist"``: sets input channels and classes.
    width_multiplier : int
        1, 2, 4 or 8 (the paper's "2S" supernet is 2).

    Notes
    -----
    ``layer_i`` takes the block id of Table XIV (candidates are listed in id order, so the
    choice index is the id); stride-2 layers 0, 4, 12 list blocks 0-17 only.
    """

    def __init__(self, *, dataset: str = "fashion_mnist", width_multiplier: int = 1) -> None:
        super().__init__()
        self.space_config = SpaceConfig.for_dataset(dataset, width_multiplier)
        cfg = self.space_config
        self.layer_one = make_layer_one(cfg.in_channels)
        layers = []
        for i in range(NUM_LAYERS):
            c_in, c_out = layer_channels(i, width_multiplier)
            ratio = nni.choice(f"ratio_{i}", list(RATIOS))
            candidates = [build_block(b, c_in, c_out, layer_stride(i), ratio) for b in allowed_blocks(i)]
            layers.append(LayerChoice(candidates, label=f"layer_{i}"))
        self.features = nn.Sequential(*layers)
        self.head = Head(layer_channels(NUM_LAYERS - 1, width_multiplier)[1], cfg.num_classes)
        init_weights(self)

    def forward_from_layer_one(self, z: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(z))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_from_layer_one(self.layer_one(x))
