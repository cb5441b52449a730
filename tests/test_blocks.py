"""Every block of Table XIV: forward/backward, shapes, finite outputs, every parameter gets a gradient."""

from __future__ import annotations

import pytest
import torch

from search_space.blocks import build_block
from search_space.encoding import BLOCKS

CASES = [
    (b.id, stride, ratio, width)
    for b in BLOCKS
    for stride in (1, 2)
    for ratio in (0.2, 2.0)
    for width in (1, 2)
    if not (b.is_pure_robust and stride == 2)
]


@pytest.mark.parametrize("block_id, stride, ratio, width", CASES)
def test_block_forward_backward(block_id, stride, ratio, width):
    torch.manual_seed(block_id)
    c_in = 24 * width if stride == 2 else 48 * width
    c_out = 48 * width
    block = build_block(block_id, c_in, c_out, stride, ratio)
    x = torch.randn(2, c_in, 8, 8, requires_grad=True)
    y = block(x)
    assert y.shape == (2, c_out, 8 // stride, 8 // stride)
    assert torch.isfinite(y).all()
    (y ** 2).mean().backward()
    assert torch.isfinite(x.grad).all()
    for name, p in block.named_parameters():
        assert p.grad is not None, f"block {block_id}: {name} got no gradient"
        assert torch.isfinite(p.grad).all(), name
        assert p.grad.abs().sum() > 0, f"block {block_id}: {name} got an all-zero gradient"


def test_pure_robust_blocks_refuse_stride_2():
    for block_id in (18, 19, 20, 21):
        with pytest.raises(ValueError, match="keeps shape"):
            build_block(block_id, 24, 48, 2, 1.0)


def test_ratio_never_gives_zero_channels():
    # the smallest base (pure robust block on 2 channels) at the smallest ratio still has 1 channel
    block = build_block(18, 2, 2, 1, 0.2)
    assert block.non_local.g.out_channels == 1
    assert torch.isfinite(block(torch.randn(1, 2, 4, 4))).all()


def test_bn_only_in_blocks_18_and_20():
    for block_id, has_bn in ((18, True), (19, False), (20, True), (21, False)):
        nl = build_block(block_id, 48, 48, 1, 1.0).non_local
        assert isinstance(nl.bn, torch.nn.BatchNorm2d) == has_bn
