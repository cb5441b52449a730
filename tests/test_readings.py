"""Readings of Table I (SpaceConfig.reading): exact parameter tables, files, the size-fit table."""

from __future__ import annotations

import random
import re
from pathlib import Path

import pytest
import torch

from search_space.__main__ import main as space_main
from search_space.legonet import legonet_from_files
from search_space.params import count_params, param_table, random_architecture
from search_space.sizes import PAPER_LEGONET_2X, best_reading, fit_table, markdown
from search_space.space import READINGS, ArchitectureError, SpaceConfig
from search_space.supernet import TamNasSpace, build_subnet

ROOT = Path(__file__).resolve().parent.parent
OTHER_READINGS = [r for r in READINGS if r != "default"]


def _built(arch, space) -> int:
    return sum(p.numel() for p in build_subnet(arch, space).parameters())


@pytest.mark.parametrize("reading", OTHER_READINGS)
@pytest.mark.parametrize("width", [1, 2])
def test_parameter_table_equals_built_model_in_every_reading(reading, width):
    # the count tests/test_space.py uses for the default reading (100 per CIFAR-10 width)
    space = SpaceConfig.for_dataset("cifar10", width, reading)
    rng = random.Random(100 * width + len(reading))
    for _ in range(100):
        arch = random_architecture(rng)
        assert count_params(arch, space) == _built(arch, space), (reading, arch.describe())


@pytest.mark.parametrize("reading", list(READINGS))
def test_extremes_and_legonet_are_built_models(reading):
    space = SpaceConfig.for_dataset("cifar10", 2, reading)
    table = param_table(space)
    lego = legonet_from_files()
    assert table.count(lego) == _built(lego, space)
    fm = SpaceConfig.for_dataset("fashion_mnist", 1, reading)
    arch = random_architecture(random.Random(7))
    assert count_params(arch, fm) == _built(arch, fm)


def test_readings_differ_where_they_say():
    lego = legonet_from_files()
    counts = {r: count_params(lego, SpaceConfig.for_dataset("cifar10", 2, r)) for r in READINGS}
    assert counts["default"] == 1_650_015  # the default reading is unchanged
    # head-se920 moves the head's SE from 176 to 920 channels: +2*(920*230) + 230 + 920 - SE(176)
    se = lambda c: 2 * c * max(8, c // 4) + max(8, c // 4) + c  # noqa: E731
    assert counts["head-se920"] - counts["default"] == se(920) - se(176)
    assert counts["paper-fit"] > counts["head-se920"]  # wider non-local layers


def test_paper_fit_supernet_freezes_to_the_counted_subnet():
    net = TamNasSpace(dataset="cifar10", width_multiplier=1, reading="paper-fit")
    arch = random_architecture(random.Random(11))
    frozen = net.freeze(arch.to_sample())
    assert sum(p.numel() for p in frozen.parameters()) == count_params(arch, net.space_config)
    assert frozen(torch.rand(2, 3, 32, 32)).shape == (2, 10)


def test_paper_fit_subnet_scripts():
    net = build_subnet(random_architecture(random.Random(12)), SpaceConfig.for_dataset("cifar10", 1, "paper-fit"))
    net.eval()
    x = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(torch.jit.script(net)(x), net(x))


def test_space_dict_records_reading_only_when_not_default():
    assert "reading" not in SpaceConfig.for_dataset("cifar10", 2).to_dict()
    s = SpaceConfig.for_dataset("cifar10", 2, "paper-fit")
    assert s.to_dict()["reading"] == "paper-fit"
    assert SpaceConfig.from_dict(s.to_dict()) == s
    with pytest.raises(ArchitectureError, match=r"space\.reading: unknown reading 'nope'"):
        SpaceConfig.from_dict({**s.to_dict(), "reading": "nope"})
    with pytest.raises(ArchitectureError, match="unknown reading"):
        SpaceConfig.for_dataset("cifar10", 1, "nope")


def test_fit_table_meets_the_floor_and_names_the_best():
    rows = {r["reading"]: r for r in fit_table()}
    assert abs(rows["default"]["legonet_2x_error"]) > 0.2
    assert not rows["default"]["block_phase_reachable_1x"]
    best = rows[best_reading(list(rows.values()))]
    assert best["reading"] == "paper-fit"
    assert abs(best["legonet_2x"] - PAPER_LEGONET_2X) <= 0.10 * PAPER_LEGONET_2X
    assert best["block_phase_reachable_1x"] and best["subnets_1x_inside"] and best["subnets_2x_inside"]


def test_readme_table_is_what_sizes_prints(capsys):
    assert space_main(["sizes"]) == 0
    printed = capsys.readouterr().out.strip()
    assert printed == markdown(fit_table())
    readme = (ROOT / "README.md").read_text()
    section = re.search(r"### Model sizes\n(.*?)(?=\n#{2,3} )", readme, re.S)
    assert section and printed in section.group(1), "README 'Model sizes' is stale: paste `python -m search_space sizes`"


def test_info_command_takes_a_reading(capsys):
    import json

    assert space_main(["info", "--dataset", "cifar10", "--width", "2", "--reading", "paper-fit", "--json",
                       "--samples", "50"]) == 0
    info = json.loads(capsys.readouterr().out)
    table = param_table(SpaceConfig.for_dataset("cifar10", 2, "paper-fit"))
    assert info["space"]["reading"] == "paper-fit"
    assert (info["params"]["min"], info["params"]["max"]) == table.interval()
