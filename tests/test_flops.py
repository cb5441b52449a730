"""The FLOPs table (search_space.flops) against torch.utils.flop_counter on built models."""

from __future__ import annotations

import random

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from search_space.architecture import Architecture
from search_space.flops import count_flops, flop_table, layer_resolutions
from search_space.params import random_architecture
from search_space.space import NUM_LAYERS, RATIOS, READINGS, SpaceConfig, allowed_blocks
from search_space.supernet import build_subnet


def measured(arch: Architecture, space: SpaceConfig) -> int:
    """What the search trial reports (trainers.search_trial.count_flops): one image, eval mode."""
    net = build_subnet(arch, space).eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        net(torch.zeros(1, space.in_channels, space.resolution, space.resolution))
    return int(counter.get_total_flops())


@pytest.mark.parametrize("dataset, width", [("fashion_mnist", 1), ("cifar10", 2)])
def test_flop_table_equals_flop_counter_on_200_architectures(dataset, width):
    space = SpaceConfig.for_dataset(dataset, width)
    rng = random.Random(1000 + width)
    for _ in range(200):
        arch = random_architecture(rng)
        assert count_flops(arch, space) == measured(arch, space), arch.describe()


@pytest.mark.parametrize("reading", [r for r in READINGS if r != "default"])
def test_flop_table_is_exact_in_every_reading(reading):
    for dataset, width in (("fashion_mnist", 1), ("cifar10", 2)):
        space = SpaceConfig.for_dataset(dataset, width, reading)
        rng = random.Random(len(reading) + width)
        for _ in range(25):
            arch = random_architecture(rng)
            assert count_flops(arch, space) == measured(arch, space), (reading, arch.describe())


def test_flop_table_extremes_are_built_models():
    space = SpaceConfig.for_dataset("cifar10", 2)
    table = flop_table(space)
    lo, hi = table.interval()
    for pick, bound in ((min, lo), (max, hi)):
        genes = []
        for i in range(NUM_LAYERS):
            best = pick((table.table[i][b][r], b, r) for b in allowed_blocks(i) for r in range(len(RATIOS)))
            genes.append((best[1], best[2]))
        assert measured(Architecture.from_genes(genes), space) == bound
    assert lo < hi
    assert layer_resolutions(32)[:5] == (32, 16, 16, 16, 16) and layer_resolutions(32)[12:] == (8, 4, 4, 4)
