"""The parameter table (paper §III-C): exact parameter counts in O(layers), without building a model.

Pure Python (no torch), so the search strategies can repair and sample under a parameter range.
The formulas mirror :mod:`search_space.blocks` and :mod:`search_space.supernet` one module at a
time, for every :class:`~search_space.space.Reading` of Table I; ``tests/test_space.py`` checks
them against built models.
"""

from __future__ import annotations

import functools
import random
import statistics
from collections.abc import Iterable
from dataclasses import dataclass

from .architecture import Architecture
from .space import (
    BLOCKS,
    DEFAULT_READING,
    NUM_LAYERS,
    RATIOS,
    READINGS,
    SpaceConfig,
    allowed_blocks,
    candidate_blocks,
    layer_channels,
    layer_stride,
    ratio_index,
)

# Widths shared with search_space.blocks / supernet, defined here once so this module stays torch-free.
SE_REDUCTION = 4
SE_MIN_HIDDEN = 8
STEM_CHANNELS = 24
HEAD_CHANNELS = (176, 920, 1024)


def _scaled(base: int, ratio: float) -> int:
    return max(1, round(base * ratio))


def non_local_base(channels: int, reading: str = DEFAULT_READING) -> int:
    """The width the channel ratio scales to give a non-local layer's inner width (Reading.non_local_inner)."""
    return channels // 2 if READINGS[reading].non_local_inner == "half" else channels


def head_widths(reading: str = DEFAULT_READING) -> tuple[int, int, int, int]:
    """(1x1 conv, SE, second 1x1 conv, third 1x1 conv) output widths of Table I's head."""
    c1, c2, c3 = HEAD_CHANNELS
    return c1, READINGS[reading].head_se, c2, c3


def _conv(cin: int, cout: int, k: int = 1, groups: int = 1, bias: bool = False) -> int:
    return cout * (cin // groups) * k * k + (cout if bias else 0)


def _bn(c: int) -> int:
    return 2 * c


def _se(c: int) -> int:
    h = max(SE_MIN_HIDDEN, c // SE_REDUCTION)
    return _conv(c, h, bias=True) + _conv(h, c, bias=True)


def _non_local(c: int, inner: int, embedded: bool, bn: bool) -> int:
    n = (3 if embedded else 1) * _conv(c, inner, bias=True) + _conv(inner, c, bias=True)
    return n + (_bn(c) if bn else 0)


def block_params(block_id: int, in_channels: int, out_channels: int, stride: int, ratio: float,
                 reading: str = DEFAULT_READING) -> int:
    """Parameters of one choice block (``search_space.blocks.build_block``)."""
    spec = BLOCKS[block_id]
    if spec.is_pure_robust:
        inner = _scaled(non_local_base(in_channels, reading), ratio)
        return _non_local(in_channels, inner, spec.non_local == "embedded_gaussian", spec.bn) + _se(in_channels)
    k = spec.kernel or 3
    channels = in_channels if stride == 2 else in_channels // 2
    oup = out_channels - channels
    mid = _scaled(out_channels // 2, ratio)

    def dw(c: int) -> int:
        return _conv(c, c, k, groups=c) + _bn(c)

    def pw(cin: int, cout: int) -> int:
        return _conv(cin, cout) + _bn(cout)

    if spec.family == "shuffle_xception":
        n = dw(channels) + pw(channels, mid) + dw(mid) + pw(mid, mid) + dw(mid) + pw(mid, oup)
    else:
        n = pw(channels, mid) + dw(mid) + pw(mid, oup)
    if spec.non_local is not None:
        n += _non_local(oup, _scaled(non_local_base(oup, reading), ratio), spec.non_local == "embedded_gaussian",
                        True)
    n += _se(oup)
    if stride == 2:
        n += dw(channels) + pw(channels, channels)
    return n


def fixed_params(space: SpaceConfig) -> int:
    """Layer one (stem) and head: the part every subnet shares."""
    c1, se, c2, c3 = head_widths(space.reading)
    stem = _conv(space.in_channels, STEM_CHANNELS, 3) + _bn(STEM_CHANNELS)
    last = layer_channels(NUM_LAYERS - 1, space.width_multiplier)[1]
    head = (_conv(last, c1) + _bn(c1) + _se(se) + _conv(c1, c2, bias=True) + _conv(c2, c3, bias=True)
            + c3 * space.num_classes + space.num_classes)
    return stem + head


@dataclass(frozen=True)
class ParamTable:
    """``table[layer][block_id][ratio_id]`` parameters (None where a block is not allowed)."""

    space: SpaceConfig
    fixed: int
    table: tuple[tuple[tuple[int, ...] | None, ...], ...]

    def count(self, arch: Architecture) -> int:
        return self.fixed + sum(self.table[i][b][r] for i, (b, r) in enumerate(arch.genes))  # type: ignore[index]

    def interval(self, ratios: Iterable[float] | None = None, blocks: Iterable[int] | None = None) -> tuple[int, int]:
        """Exact (min, max) parameter count over the architectures whose ratios are in ``ratios``
        and blocks in ``blocks`` (``None``: all), in O(layers)."""
        rids = range(len(RATIOS)) if ratios is None else [ratio_index(r) for r in ratios]
        lo = hi = self.fixed
        for i in range(NUM_LAYERS):
            vals = [self.table[i][b][r] for b in candidate_blocks(i, blocks) for r in rids]  # type: ignore[index]
            lo += min(vals)
            hi += max(vals)
        return lo, hi

    @property
    def min_params(self) -> int:
        return self.interval()[0]

    @property
    def max_params(self) -> int:
        return self.interval()[1]


@functools.lru_cache(maxsize=32)
def param_table(space: SpaceConfig) -> ParamTable:
    rows = []
    for i in range(NUM_LAYERS):
        c_in, c_out = layer_channels(i, space.width_multiplier)
        allowed = set(allowed_blocks(i))
        rows.append(tuple(
            tuple(block_params(b, c_in, c_out, layer_stride(i), r, space.reading) for r in RATIOS)
            if b in allowed else None
            for b in range(len(BLOCKS))
        ))
    return ParamTable(space, fixed_params(space), tuple(rows))


def count_params(arch: Architecture, space: SpaceConfig | None = None) -> int:
    """Exact parameter count of ``arch`` in ``space`` from the table, in O(layers)."""
    return param_table(space or SpaceConfig()).count(arch)


def random_architecture(rng: random.Random, ratios: tuple[float, ...] = RATIOS) -> Architecture:
    """A uniformly random valid architecture (stride-2 rule respected)."""
    return Architecture(tuple(rng.choice(allowed_blocks(i)) for i in range(NUM_LAYERS)),
                        tuple(rng.choice(ratios) for _ in range(NUM_LAYERS)))


def space_statistics(space: SpaceConfig, samples: int = 20000, seed: int = 0) -> dict[str, float]:
    """Exact min/max parameter count and the median over ``samples`` uniform random architectures."""
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 1:
        raise ValueError(f"samples: expected an integer >= 1, got {samples!r}")
    table = param_table(space)
    rng = random.Random(seed)
    counts = [table.count(random_architecture(rng)) for _ in range(samples)]
    return {"min": table.min_params, "median": statistics.median(counts), "max": table.max_params,
            "median_samples": samples, "seed": seed}
