"""The 22 choice blocks of TAM-NAS (paper Fig. 3, Fig. 4, Table XIV), written with NNI's mutables.

Importing this module does not import ``nni.nas``: NNI's mutable conv/BN (and with them
Lightning, torchvision, ...) are imported only when a block is built with a mutable width,
i.e. where the supernet is built (:mod:`search_space.supernet`). A frozen subnet
(:mod:`search_space.subnet`) is plain PyTorch.

Every intermediate width is ``max(1, round(base * ratio))`` where ``ratio`` is the layer's
channel selector (an ``nni.choice`` in the supernet, a float in a frozen subnet):

- ShuffleNetV2 / Shuffle-Xception blocks: ``base`` is half the block's output width (as in
  ShuffleNetV2); with a non-local layer in the main branch its inner width is scaled by the same
  ratio (base: half of the main branch's width).
- Pure robust blocks: ``base`` is the non-local layer's inner width, half the block's width.

``forward`` reads every size from tensors, so the same code runs as a supernet candidate
(NNI mixed ops slice channels) and as a frozen standalone subnet.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from nni.mutable import MutableExpression
from torch import nn

from .params import SE_MIN_HIDDEN, SE_REDUCTION
from .space import BLOCKS, BlockSpec


def scaled_channels(base: int, ratio: Any) -> Any:
    """``max(1, round(base * ratio))``: an int, or a mutable expression when ``ratio`` is a choice."""
    return MutableExpression.max(1, round(base * ratio))


def _is_mutable(*values: Any) -> bool:
    return any(isinstance(v, MutableExpression) or hasattr(v, "freeze") for v in values)


def conv2d(cin: Any, cout: Any, kernel: int, stride: int = 1, padding: int = 0, *,
           groups: Any = 1, bias: bool = True) -> nn.Module:
    """``MutableConv2d`` when a width is mutable, plain ``nn.Conv2d`` otherwise (standalone subnets)."""
    if _is_mutable(cin, cout, groups):
        from nni.nas.nn.pytorch import MutableConv2d  # the supernet only: nni.nas pulls in Lightning

        return MutableConv2d(cin, cout, kernel, stride, padding, groups=groups, bias=bias)
    return nn.Conv2d(cin, cout, kernel, stride, padding, groups=groups, bias=bias)


def batch_norm(c: Any) -> nn.Module:
    if _is_mutable(c):
        from nni.nas.nn.pytorch import MutableBatchNorm2d

        return MutableBatchNorm2d(c)
    return nn.BatchNorm2d(c)


def se_hidden(channels: int) -> int:
    return max(SE_MIN_HIDDEN, channels // SE_REDUCTION)


class SqueezeExcitation(nn.Module):
    """SE layer (Hu et al., 2018): channel gates from globally pooled features."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        hidden = se_hidden(channels)
        self.reduce = nn.Conv2d(channels, hidden, 1)
        self.expand = nn.Conv2d(hidden, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = F.adaptive_avg_pool2d(x, 1)
        s = torch.sigmoid(self.expand(F.relu(self.reduce(s))))
        return x * s


class NonLocal(nn.Module):
    """Non-local self-attention layer (Wang et al., 2018) with a residual connection.

    ``mode="embedded_gaussian"``: ``softmax(theta(x)^T phi(x))``; ``mode="gaussian"``:
    ``softmax(x^T x)`` on the raw features (no embeddings). ``g`` and the output projection
    ``w`` go through the (mutable) inner width; ``bn`` adds batch norm after ``w``.
    """

    def __init__(self, channels: int, inner: Any, *, mode: str, bn: bool = True) -> None:
        super().__init__()
        if mode not in ("embedded_gaussian", "gaussian"):
            raise ValueError(f"non-local mode must be 'embedded_gaussian' or 'gaussian', got {mode!r}")
        self.mode = mode
        # Gaussian: the affinity uses the raw features, so theta and phi are identities.
        embedded = mode == "embedded_gaussian"
        self.theta = conv2d(channels, inner, 1) if embedded else nn.Identity()
        self.phi = conv2d(channels, inner, 1) if embedded else nn.Identity()
        self.g = conv2d(channels, inner, 1)
        self.w = conv2d(inner, channels, 1)
        self.bn = nn.BatchNorm2d(channels) if bn else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        g = self.g(x).flatten(2)  # (b, inner, hw)
        affinity = self.theta(x).flatten(2).transpose(1, 2) @ self.phi(x).flatten(2)  # (b, hw, hw)
        y = torch.softmax(affinity, dim=-1) @ g.transpose(1, 2)  # (b, hw, inner)
        y = y.transpose(1, 2).reshape(b, -1, h, w)
        return x + self.bn(self.w(y))


def channel_split(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """ShuffleNetV2's channel shuffle + split: even channels bypass, odd ones enter the main branch."""
    b, c, h, w = x.shape
    x = x.reshape(b * c // 2, 2, h * w).permute(1, 0, 2).reshape(2, -1, c // 2, h, w)
    return x[0], x[1]


class ShuffleBlock(nn.Module):
    """ShuffleNetV2 (``pdp``) or Shuffle-Xception (``dpdpdp``) block with attention in the main branch.

    Blocks 0-5 carry SE; blocks 6-17 carry a non-local layer followed by SE (paper Fig. 3 (a), (b)).
    """

    def __init__(self, in_channels: int, out_channels: int, ratio: Any, *, kernel: int, stride: int,
                 xception: bool, non_local: str | None) -> None:
        super().__init__()
        if stride not in (1, 2):
            raise ValueError(f"stride must be 1 or 2, got {stride}")
        self.stride = stride
        channels = in_channels if stride == 2 else in_channels // 2
        oup_main = out_channels - channels
        mid = scaled_channels(out_channels // 2, ratio)
        pad = kernel // 2

        def dw(c: Any, s: int) -> list[nn.Module]:
            return [conv2d(c, c, kernel, s, pad, groups=c, bias=False), batch_norm(c)]

        def pw(cin: Any, cout: Any) -> list[nn.Module]:
            return [conv2d(cin, cout, 1, bias=False), batch_norm(cout), nn.ReLU()]

        if xception:
            main = [*dw(channels, stride), *pw(channels, mid), *dw(mid, 1), *pw(mid, mid),
                    *dw(mid, 1), *pw(mid, oup_main)]
        else:
            main = [*pw(channels, mid), *dw(mid, stride), *pw(mid, oup_main)]
        if non_local is not None:
            main.append(NonLocal(oup_main, scaled_channels(oup_main // 2, ratio), mode=non_local))
        main.append(SqueezeExcitation(oup_main))
        self.branch_main = nn.Sequential(*main)
        if stride == 2:
            self.branch_proj = nn.Sequential(
                nn.Conv2d(channels, channels, kernel, 2, pad, groups=channels, bias=False),
                nn.BatchNorm2d(channels),
                nn.Conv2d(channels, channels, 1, bias=False),
                nn.BatchNorm2d(channels),
                nn.ReLU(),
            )
        else:
            self.branch_proj = nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.stride == 2:
            return torch.cat((self.branch_proj(x), self.branch_main(x)), 1)
        proj, main = channel_split(x)
        return torch.cat((proj, self.branch_main(main)), 1)


class PureRobustBlock(nn.Module):
    """Non-local layer followed by SE, shape-preserving (paper Fig. 3 (c)); blocks 18-21."""

    def __init__(self, channels: int, ratio: Any, *, non_local: str, bn: bool) -> None:
        super().__init__()
        self.non_local = NonLocal(channels, scaled_channels(channels // 2, ratio), mode=non_local, bn=bn)
        self.se = SqueezeExcitation(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.se(self.non_local(x))


def build_block(block_id: int, in_channels: int, out_channels: int, stride: int, ratio: Any) -> nn.Module:
    """Instantiate block ``block_id`` of Table XIV for one layer of the supernet or a subnet."""
    spec: BlockSpec = BLOCKS[block_id]
    if spec.is_pure_robust:
        if stride != 1 or in_channels != out_channels:
            raise ValueError(f"block {block_id} ({spec.short}) keeps shape; it cannot go from "
                             f"{in_channels} to {out_channels} channels at stride {stride}")
        return PureRobustBlock(in_channels, ratio, non_local=spec.non_local, bn=spec.bn)
    assert spec.kernel is not None
    return ShuffleBlock(in_channels, out_channels, ratio, kernel=spec.kernel, stride=stride,
                        xception=spec.family == "shuffle_xception", non_local=spec.non_local)


def init_weights(model: nn.Module) -> None:
    """He (fan-in) initialization of every convolution, small normal for the classifier.

    PyTorch's default init shrinks the signal by about 3x per un-normalized layer, and the head
    (Table I) has two such 1x1 convolutions after pooling: with it the logits start near zero
    and the trunk gets almost no gradient (the network does not train). The non-local output
    (BN scale, or the projection when there is no BN) starts at zero, so each non-local layer
    starts as the identity (Wang et al., 2018).
    """
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_in", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.Linear):
            nn.init.normal_(m.weight, 0.0, 0.01)
            nn.init.zeros_(m.bias)
    for m in model.modules():
        if isinstance(m, NonLocal):
            nn.init.zeros_(m.bn.weight if isinstance(m.bn, nn.BatchNorm2d) else m.w.weight)
