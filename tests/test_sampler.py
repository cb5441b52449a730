"""The supernet's architecture sampler: phases, ranges, widening, hold, seeds, state (paper §III-C)."""

from __future__ import annotations

import io

import pytest
import torch

from search_space.encoding import RATIOS, SpaceConfig, allowed_blocks
from search_space.params import count_params
from trainers.config import build_config
from trainers.sampler import ArchitectureSampler, PhaseConfig, SamplerConfig, SamplerError

CIFAR = SpaceConfig.for_dataset("cifar10", 1)
CIFAR2 = SpaceConfig.for_dataset("cifar10", 2)


def paper_like(hold: int = 20, hold_unit: str = "epoch") -> SamplerConfig:
    """The paper's schedule with ranges feasible at width 1 (configs/supernet/cifar10_trades_yopo.yml)."""
    return SamplerConfig(
        phases=(PhaseConfig(epochs=500, param_range=(1.50e6, 1.75e6), name="block", milestones=(200, 400, 450)),
                PhaseConfig(epochs=500, param_range=(1.61e6, 2.2233e6), name="joint", sample_ratios=True,
                            initial_ratios=(1.8, 2.0), widen_every=20, milestones=(600, 700, 800))),
        hold=hold, hold_unit=hold_unit)


def test_phases_ranges_and_ratios():
    s = ArchitectureSampler(paper_like(hold=1), CIFAR, seed=0)
    for epoch in range(0, 500, 7):
        arch = s.architecture(epoch, epoch)
        assert set(arch.ratios) == {1.0}  # block sampling: blocks only, default ratio
        assert 1.50e6 <= count_params(arch, CIFAR) <= 1.75e6 and count_params(arch, CIFAR) == s.current_params
        assert all(b in allowed_blocks(i) for i, b in enumerate(arch.blocks))
    for epoch in range(500, 1000, 7):
        arch = s.architecture(epoch, epoch)
        assert set(arch.ratios) <= set(s.ratio_choices(epoch, epoch))
        assert 1.61e6 <= count_params(arch, CIFAR) <= 2.2233e6


def test_widening_schedule_paper():
    s = ArchitectureSampler(paper_like(), CIFAR, seed=0)
    assert s.ratio_choices(0, 0) == (1.0,)
    assert s.ratio_choices(500, 0) == (1.8, 2.0)
    assert s.ratio_choices(519, 0) == (1.8, 2.0)
    assert s.ratio_choices(520, 0) == (1.6, 1.8, 2.0)  # one smaller ratio every 20 epochs
    assert s.ratio_choices(540, 0) == (1.4, 1.6, 1.8, 2.0)
    assert s.ratio_choices(660, 0) == RATIOS and s.ratio_choices(999, 0) == RATIOS
    # A middle start widens downwards first, then upwards.
    phase = PhaseConfig(epochs=10, param_range=(0, 1e9), sample_ratios=True, initial_ratios=(1.0, 1.2))
    sched = phase.ratio_schedule()
    assert sched[1] == (0.8, 1.0, 1.2) and sched[4] == (0.2, 0.4, 0.6, 0.8, 1.0, 1.2)
    assert sched[5] == (0.2, 0.4, 0.6, 0.8, 1.0, 1.2, 1.4) and sched[-1] == RATIOS


def test_widening_in_steps():
    cfg = SamplerConfig(phases=(PhaseConfig(epochs=1, param_range=(0, 1e9)),
                                PhaseConfig(epochs=5, param_range=(0, 1e9), sample_ratios=True,
                                            initial_ratios=(2.0,), widen_every=3)),
                        hold=1, hold_unit="step", widen_unit="step")
    s = ArchitectureSampler(cfg, CIFAR, seed=0)
    s.architecture(0, 0)
    s.architecture(1, 10)  # phase 1 starts at step 10
    assert s.ratio_choices(1, 12) == (2.0,)
    assert s.ratio_choices(1, 13) == (1.8, 2.0)
    assert s.ratio_choices(2, 19) == (1.4, 1.6, 1.8, 2.0)


def test_hold_epochs_steps_and_phase_change():
    s = ArchitectureSampler(paper_like(hold=20), CIFAR, seed=1)
    a0 = s.architecture(0, 0)
    assert all(s.architecture(e, 100 * e) is a0 for e in range(20))  # held for 20 epochs
    a20 = s.architecture(20, 2000)
    assert s.samples_drawn == 2 and s.sampled_epoch == 20 and a20 is s.current
    for e in range(21, 500):
        s.architecture(e, 100 * e)
    assert s.samples_drawn == 25  # 500 epochs / 20
    s.architecture(500, 50000)  # a new phase always resamples
    assert s.samples_drawn == 26 and s.phase == 1
    spos = ArchitectureSampler(paper_like(hold=1, hold_unit="step"), CIFAR, seed=1)
    for step in range(10):
        spos.architecture(0, step)
    assert spos.samples_drawn == 10
    held = ArchitectureSampler(paper_like(hold=3, hold_unit="step"), CIFAR, seed=1)
    for step in range(9):
        held.architecture(0, step)
    assert held.samples_drawn == 3


def _sequence(sampler: ArchitectureSampler, epochs: range) -> list[str]:
    return [sampler.architecture(e, e).key for e in epochs]


def test_reproducible_from_seed():
    seq = _sequence(ArchitectureSampler(paper_like(hold=1), CIFAR, seed=7), range(480, 560))
    assert seq == _sequence(ArchitectureSampler(paper_like(hold=1), CIFAR, seed=7), range(480, 560))
    assert seq != _sequence(ArchitectureSampler(paper_like(hold=1), CIFAR, seed=8), range(480, 560))
    assert len(set(seq)) > 70


def test_state_round_trip_through_checkpoint():
    full = ArchitectureSampler(paper_like(hold=2), CIFAR, seed=3)
    expected = _sequence(full, range(490, 530))
    a = ArchitectureSampler(paper_like(hold=2), CIFAR, seed=3)
    first = _sequence(a, range(490, 505))
    buf = io.BytesIO()
    torch.save({"sampler": a.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)["sampler"]
    b = ArchitectureSampler(paper_like(hold=2), CIFAR, seed=3)
    b.load_state_dict(state)
    assert b.current == a.current and b.samples_drawn == a.samples_drawn
    assert first + _sequence(b, range(505, 530)) == expected


def test_probe_is_fixed_and_leaves_state_alone():
    s = ArchitectureSampler(paper_like(), CIFAR, seed=0)
    state = s.state_dict()
    p = s.probe_architecture()
    assert p == s.probe_architecture() and set(p.ratios) == {1.0}
    assert 1.50e6 <= count_params(p, CIFAR) <= 1.75e6
    assert s.state_dict() == state


def test_infeasible_range_is_a_clear_error():
    # The paper's block-sampling range cannot be met by our width-1 space at ratio 1.0 (max 1.75M).
    cfg = SamplerConfig(phases=(PhaseConfig(epochs=500, param_range=(1.823e6, 2.375e6), name="block"),))
    with pytest.raises(SamplerError, match=r"phases\[0\] \(block\).*infeasible.*cifar10.*width 1.*1,339,454-1,748,642"):
        ArchitectureSampler(cfg, CIFAR, seed=0)
    ArchitectureSampler(cfg, CIFAR2, seed=0)  # ... but it can at width 2 (the paper's 2S)
    # Joint phase: checked for every ratio set of the widening schedule.
    joint = SamplerConfig(phases=(PhaseConfig(epochs=10, param_range=(1.0e6, 1.30e6), sample_ratios=True,
                                              initial_ratios=(1.8, 2.0)),))
    with pytest.raises(SamplerError, match=r"ratios \[1.8, 2.0\]"):
        ArchitectureSampler(joint, CIFAR, seed=0)


def test_feasible_but_too_narrow_range():
    lo = 1_500_000
    cfg = SamplerConfig(phases=(PhaseConfig(epochs=1, param_range=(lo, lo)),), max_tries=50)
    s = ArchitectureSampler(cfg, CIFAR, seed=0)
    with pytest.raises(SamplerError, match="50 tries"):
        s.architecture(0, 0)


def test_learning_rate_schedule_paper():
    cfg = paper_like()
    lr = [cfg.learning_rate(e, 0.1, 0.1) for e in (0, 199, 200, 400, 450, 499, 500, 599, 600, 700, 800, 999)]
    assert lr == pytest.approx([0.1, 0.1, 0.01, 1e-3, 1e-4, 1e-4, 0.1, 0.1, 0.01, 1e-3, 1e-4, 1e-4])


def test_config_checks():
    with pytest.raises(ValueError, match="milestones"):
        SamplerConfig(phases=(PhaseConfig(epochs=10, param_range=(0, 1), milestones=(10,)),))
    with pytest.raises(ValueError, match="param_range"):
        PhaseConfig(epochs=10, param_range=(2, 1))
    with pytest.raises(ValueError, match="ratio"):
        PhaseConfig(epochs=10, param_range=(0, 1), ratio=0.3)
    cfg = build_config(SamplerConfig, {"phases": [{"epochs": 3, "param_range": ["1.2e6", 2e6]}],
                                       "hold": 1, "hold_unit": "step"})
    assert cfg.phases[0].param_range == (1.2e6, 2e6) and cfg.hold_unit == "step"


def test_block_subset_is_respected_and_checked():
    phases = (PhaseConfig(epochs=2, param_range=(0, 1e9), name="joint", sample_ratios=True,
                          initial_ratios=(0.8, 1.0, 1.2), widen_every=1000),)
    s = ArchitectureSampler(SamplerConfig(phases=phases, hold=1, hold_unit="step", blocks=(0, 3, 6, 18)),
                            CIFAR, seed=0)
    seen = set()
    for step in range(300):
        arch = s.architecture(step // 150, step)
        seen.update(arch.blocks)
        assert all(b in (0, 3, 6, 18) and b in allowed_blocks(i) for i, b in enumerate(arch.blocks))
    assert seen == {0, 3, 6, 18}  # every candidate is drawn, block 18 only where stride 1
    assert {a for a in [s.probe_architecture()] for a in a.blocks} <= {0, 3, 6, 18}
    with pytest.raises(ValueError, match=r"blocks: \[18, 19\] leaves no candidate for stride-2 layer 0"):
        SamplerConfig(phases=phases, blocks=(18, 19))
    with pytest.raises(ValueError, match=r"blocks: 22 in \[0, 22\] is not a block id 0..21"):
        SamplerConfig(phases=phases, blocks=(0, 22))
    with pytest.raises(SamplerError, match="infeasible"):  # the range is checked over the subset only
        ArchitectureSampler(SamplerConfig(phases=(PhaseConfig(epochs=1, param_range=(2.2e6, 2.3e6)),),
                                          blocks=(0,)), CIFAR, seed=0)


def test_sample_at_draws_from_the_training_distribution_without_touching_state():
    import random

    s = ArchitectureSampler(paper_like(hold=1), CIFAR, seed=3)
    state = s.state_dict()
    cfg = paper_like(hold=1)
    for epoch in (0, 520, 900):
        phase = cfg.phases[cfg.phase_index(epoch)]
        archs = [s.sample_at(epoch, 0, random.Random(f"x{i}")) for i in range(20)]
        assert archs[0] == s.sample_at(epoch, 0, random.Random("x0"))  # the rng decides
        ratios = set(s.ratio_choices(epoch, 0))
        for a in archs:
            assert phase.param_range[0] <= count_params(a, CIFAR) <= phase.param_range[1]
            assert set(a.ratios) <= ratios
    assert s.state_dict() == state
