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

    Layout: layer one (stem 3×3 conv + BN + ReLU, ``stem_width`` channels), then one
    stage per entry of ``widths`` with ``depth`` 3×3 conv-BN-ReLU (the first with the
    stage's stride), global average pooling and a linear classifier. The default
    (``widths=(16, 32, 64)``, strides 1, 2, 2) has about 75K parameters.
    ``SmallCNN(stem_width=24, widths=(48, 96, 192), strides=(2, 2, 2))`` follows the
    stage layout of the paper's Table I (stem at full resolution, then three
    stride-2 stages of 48/96/192 channels); with ``depth=3`` the stem is under 2 %
    of the multiply-adds, as in the paper's tiny networks (benchmarks use this).

    Parameters
    ----------
    in_channels : int
        Input channels (3 for CIFAR-10/SVHN, 1 for Fashion-MNIST).
    num_classes : int
        Number of classes.
    widths : sequence of int
        Channels of each stage.
    stem_width : int, optional
        Channels of the stem (layer one); default ``widths[0]``.
    strides : sequence of int, optional
        Stride (1 or 2) of each stage; default 1 for the first stage, 2 after.
    depth : int
        3×3 conv-BN-ReLU layers per stage (the first one strided).
    mean, std : sequence of float, optional
        If given, inputs (in [0, 1]) are normalized inside layer one.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 10,
        *,
        widths: Sequence[int] = (16, 32, 64),
        stem_width: int | None = None,
        strides: Sequence[int] | None = None,
        depth: int = 2,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if in_channels < 1 or num_classes < 2:
            raise ValueError(f"need in_channels >= 1 and num_classes >= 2, got {in_channels}, {num_classes}")
        if not widths or any(w < 1 for w in widths):
            raise ValueError(f"widths must be a non-empty sequence of positive ints, got {widths!r}")
        stem_width = widths[0] if stem_width is None else stem_width
        strides = (1,) + (2,) * (len(widths) - 1) if strides is None else tuple(strides)
        if stem_width < 1:
            raise ValueError(f"stem_width must be >= 1, got {stem_width!r}")
        if len(strides) != len(widths) or any(s not in (1, 2) for s in strides):
            raise ValueError(
                f"strides must give 1 or 2 for each of the {len(widths)} stages, got {strides!r}"
            )
        if isinstance(depth, bool) or not isinstance(depth, int) or depth < 1:
            raise ValueError(f"depth must be an int >= 1, got {depth!r}")
        if (mean is None) != (std is None):
            raise ValueError("give both mean and std, or neither")

        stem: list[nn.Module] = []
        if mean is not None and std is not None:
            stem.append(Normalize(mean, std))
        stem.append(conv_bn_relu(in_channels, stem_width))
        # "Layer one" of YOPO: normalization + stem conv + BN + ReLU.
        self.layer_one = nn.Sequential(*stem)

        stages: list[nn.Module] = []
        previous = stem_width
        for width, stride in zip(widths, strides, strict=True):
            stages.append(conv_bn_relu(previous, width, stride=stride))
            stages.extend(conv_bn_relu(width, width) for _ in range(depth - 1))
            previous = width
        self.features = nn.Sequential(*stages)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(previous, num_classes)

    def forward_from_layer_one(self, z: Tensor) -> Tensor:
        """Run the network from the output ``z`` of :attr:`layer_one` to the logits."""
        return self.classifier(torch.flatten(self.pool(self.features(z)), 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.forward_from_layer_one(self.layer_one(x))
