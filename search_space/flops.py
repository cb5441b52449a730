"""The FLOPs table: exact forward FLOPs of one image in O(layers), without building a model.

Pure Python (no torch), like the parameter table (:mod:`search_space.params`), so the tuner can
repair into a FLOPs range and search ``flops:min`` from it. The count is what
``torch.utils.flop_counter.FlopCounterMode`` reports for ``model(x)`` on one image (the search
trial's ``flops``): a multiply-add is 2 FLOPs, and only these are counted:

- convolutions: ``2 * H_out * W_out * C_out * (C_in / groups) * k * k`` (bias not counted);
- the classifier (``addmm``): ``2 * in * out`` (bias not counted);
- the non-local layer's two batched matrix products (``bmm``) on ``n = H * W`` positions:
  affinity ``2 * n * d * n`` (``d``: the embedding width, or the channels in the Gaussian
  version) and aggregation ``2 * n * n * inner``.

Batch norm, activations, softmax, sigmoid, pooling, the SE gate's multiply and the additions
of residuals are not counted (FlopCounterMode does not count them). SE layers are counted: they
are two 1x1 convolutions on the pooled 1x1 features. ``tests/test_flops.py`` checks the table
against FlopCounterMode on built models for every reading.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable

from .architecture import Architecture
from .params import (
    SE_MIN_HIDDEN,
    SE_REDUCTION,
    STEM_CHANNELS,
    ParamTable,
    _scaled,
    head_widths,
    non_local_base,
)
from .space import (
    BLOCKS,
    DEFAULT_READING,
    NUM_LAYERS,
    RATIOS,
    SpaceConfig,
    allowed_blocks,
    layer_channels,
    layer_stride,
)


def _conv(cin: int, cout: int, hw: int, k: int = 1, groups: int = 1) -> int:
    """FLOPs of a convolution with output ``hw`` x ``hw``."""
    return 2 * hw * hw * cout * (cin // groups) * k * k


def _out_size(h: int, stride: int, k: int = 3) -> int:
    return (h + 2 * (k // 2) - k) // stride + 1


def _se(c: int) -> int:
    h = max(SE_MIN_HIDDEN, c // SE_REDUCTION)
    return _conv(c, h, 1) + _conv(h, c, 1)


def _non_local(c: int, inner: int, hw: int, embedded: bool) -> int:
    n = hw * hw
    d = inner if embedded else c  # the Gaussian affinity uses the raw features
    convs = (3 if embedded else 1) * _conv(c, inner, hw) + _conv(inner, c, hw)
    return convs + 2 * n * d * n + 2 * n * n * inner


def layer_resolutions(resolution: int) -> tuple[int, ...]:
    """Input height (= width) of every choice layer for ``resolution`` x ``resolution`` images."""
    out, h = [], resolution  # the stem keeps the resolution (stride 1)
    for i in range(NUM_LAYERS):
        out.append(h)
        h = _out_size(h, layer_stride(i))
    return tuple(out)


def block_flops(block_id: int, in_channels: int, out_channels: int, stride: int, ratio: float, h: int,
                reading: str = DEFAULT_READING) -> int:
    """FLOPs of one choice block (``search_space.blocks.build_block``) on an ``h`` x ``h`` input."""
    spec = BLOCKS[block_id]
    if spec.is_pure_robust:
        inner = _scaled(non_local_base(in_channels, reading), ratio)
        return _non_local(in_channels, inner, h, spec.non_local == "embedded_gaussian") + _se(in_channels)
    k = spec.kernel or 3
    ho = _out_size(h, stride, k)
    channels = in_channels if stride == 2 else in_channels // 2
    oup = out_channels - channels
    mid = _scaled(out_channels // 2, ratio)

    def dw(c: int) -> int:
        return _conv(c, c, ho, k, groups=c)

    if spec.family == "shuffle_xception":
        n = dw(channels) + _conv(channels, mid, ho) + dw(mid) + _conv(mid, mid, ho) + dw(mid) + _conv(mid, oup, ho)
    else:
        n = _conv(channels, mid, h) + dw(mid) + _conv(mid, oup, ho)
    if spec.non_local is not None:
        n += _non_local(oup, _scaled(non_local_base(oup, reading), ratio), ho, spec.non_local == "embedded_gaussian")
    n += _se(oup)
    if stride == 2:
        n += dw(channels) + _conv(channels, channels, ho)
    return n


def fixed_flops(space: SpaceConfig) -> int:
    """Stem and head: the FLOPs every subnet shares."""
    c1, se, c2, c3 = head_widths(space.reading)
    stem = _conv(space.in_channels, STEM_CHANNELS, space.resolution, 3)
    last = layer_channels(NUM_LAYERS - 1, space.width_multiplier)[1]
    hf = _out_size(layer_resolutions(space.resolution)[-1], layer_stride(NUM_LAYERS - 1))
    head = _conv(last, c1, hf) + _se(se) + _conv(c1, c2, 1) + _conv(c2, c3, 1) + 2 * c3 * space.num_classes
    return stem + head


class FlopTable(ParamTable):
    """``table[layer][block_id][ratio_id]`` FLOPs (None where a block is not allowed); ``count``
    and ``interval`` as for parameters."""

    def interval(self, ratios: Iterable[float] | None = None, blocks: Iterable[int] | None = None) -> tuple[int, int]:
        """Exact (min, max) FLOPs over the architectures whose ratios are in ``ratios`` and blocks in ``blocks``."""
        return super().interval(ratios, blocks)


@functools.lru_cache(maxsize=32)
def flop_table(space: SpaceConfig) -> FlopTable:
    rows = []
    for i, h in enumerate(layer_resolutions(space.resolution)):
        c_in, c_out = layer_channels(i, space.width_multiplier)
        allowed = set(allowed_blocks(i))
        rows.append(tuple(
            tuple(block_flops(b, c_in, c_out, layer_stride(i), r, h, space.reading) for r in RATIOS)
            if b in allowed else None
            for b in range(len(BLOCKS))
        ))
    return FlopTable(space, fixed_flops(space), tuple(rows))


def count_flops(arch: Architecture, space: SpaceConfig | None = None) -> int:
    """Exact FLOPs of ``arch`` on one image of ``space`` from the table, in O(layers)."""
    return flop_table(space or SpaceConfig()).count(arch)
