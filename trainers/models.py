"""Small reference CNN implementing the project's "layer one" interface.

YOPO (Zhang et al., NeurIPS 2019; paper §III-D) decouples the adversary from all
but the first layer of the network. Every model trained with TRADES-YOPO-m-n in
this project therefore exposes:

* ``layer_one: nn.Module`` -- input normalization (if any) + stem 3×3 conv + BN + ReLU;
* ``forward_from_layer_one(z: Tensor) -> Tensor`` -- the rest of the network,

such that ``model(x) == model.forward_from_layer_one(model.layer_one(x))``.
The search-space subnets and the supernet implement the same interface; this
module holds :class:`SmallCNN`, a plain CNN used by tests and benchmarks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

__all__ = ["Normalize", "SmallCNN", "conv_bn_relu"]


class Normalize(nn.Module):
    """Per-channel ``(x - mean) / std`` inside the model, so inputs stay in [0, 1].

    Parameters
    ----------
    mean, std : sequence of float
        One value per input channel.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        super().__init__()
        if len(mean) != len(std):
            raise ValueError(f"mean and std must have the same length, got {len(mean)} and {len(std)}")
        if any(s <= 0 for s in std):
            raise ValueError(f"std must be positive, got {list(std)}")
        self.register_buffer("mean", torch.tensor(list(mean)).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(list(std)).view(1, -1, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


def conv_bn_relu(in_channels: int, out_channels: int, *, stride: int = 1) -> nn.Sequential:
    """3×3 convolution (no bias) + BatchNorm + ReLU."""
    return nn.Sequential(
        nn.Conv2d(in_channels, out_channels, 3, stride=stride, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    )


class SmallCNN(nn.Module):
    """A tiny plain CNN with an explicit YOPO "layer one".

    Layout: layer one (stem 3×3 conv + BN + ReLU, ``widths[0]`` channels), then one
    stage per entry of ``widths`` with two 3×3 conv-BN-ReLU (the first stage keeps
    the resolution, later stages halve it), global average pooling and a linear
    classifier. With the default ``widths=(16, 32, 64)`` it has about 70K
    parameters and the stem is under 4 % of the multiply-adds, as in the tiny
    networks of the paper where layer one is a small share of the cost.

    Parameters
    ----------
    in_channels : int
        Input channels (3 for CIFAR-10/SVHN, 1 for Fashion-MNIST).
    num_classes : int
        Number of classes.
    widths : sequence of int
        Channels of the stem/first stage and of each following stage.
    mean, std : sequence of float, optional
        If given, inputs (in [0, 1]) are normalized inside layer one.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        *,
        widths: Sequence[int] = (16, 32, 64),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2:
            raise ValueError(f"need in_channels >= 1 and num_classes >= 2, got {in_channels}, {num_classes}")
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths!r}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")

        stem: list[nn.Module] = []
        if mean is not None and std is not None:
            stem.append(Normalize(mean, std))
        stem.append(conv_bn_relu(in_channels, widths[0]))
        # "Layer one" of YOPO: normalization + stem conv + BN + ReLU.
        self.layer_one = nn.Sequential(*stem)

        stages: list[nn.Module] = []
        previous = widths[0]
        for i, width in enumerate(widths):
            stages.append(conv_bn_relu(previous, width, stride=1 if i == 0 else 2))
            stages.append(conv_bn_relu(width, width))
            previous = width
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(previous, num_classes)

    def forward_from_layer_one(self, z: Tensor) -> Tensor:
        """Run the network from the output ``z`` of :attr:`layer_one` to the logits."""
        return self.classifier(torch.flatten(self.pool(self.features(z)), 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_from_layer_one(self.layer_one(x))
