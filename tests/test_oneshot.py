"""Weight inheritance from the one-shot supernet (with the NNI 3.0 freeze workaround)."""

from __future__ import annotations

import random

import torch
from nni.nas.oneshot.pytorch.supermodule.operation import MixedBatchNorm2d

from search_space.oneshot import activate, inherit_subnet, to_one_shot
from search_space.params import count_params, random_architecture
from search_space.supernet import Subnet, TamNasSpace


def _randomize_bn(model: torch.nn.Module) -> None:
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.5, 0.5)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.2, 0.2)


def test_inherited_subnet_equals_supernet():
    torch.manual_seed(0)
    supernet = to_one_shot(TamNasSpace(dataset="cifar10", width_multiplier=1))
    _randomize_bn(supernet)
    supernet.eval()
    rng = random.Random(0)
    x = torch.rand(4, 3, 32, 32)
    for _ in range(3):
        arch = random_architecture(rng)
        activate(supernet, arch)
        subnet = inherit_subnet(supernet, arch)
        assert isinstance(subnet, Subnet) and not subnet.training
        assert sum(p.numel() for p in subnet.parameters()) == count_params(arch, supernet.space_config)
        with torch.no_grad():
            assert (supernet(x) - subnet(x)).abs().max().item() <= 1e-6
        # a copy: training the subnet leaves the supernet alone
        before = supernet.layer_one[0].weight.clone()
        subnet.layer_one[0].weight.data.add_(1.0)
        assert torch.equal(supernet.layer_one[0].weight, before)


def test_inheritance_covers_bias_free_convs_and_bn_counters():
    """The two NNI 3.0 freeze bugs (docs/architecture.md §8): bias-free convs and BN's num_batches_tracked."""
    supernet = to_one_shot(TamNasSpace(dataset="fashion_mnist"))
    for m in supernet.modules():
        if isinstance(m, MixedBatchNorm2d):
            m.num_batches_tracked.fill_(7)
    arch = random_architecture(random.Random(1))
    subnet = inherit_subnet(supernet, arch)
    convs = [m for m in subnet.modules() if isinstance(m, torch.nn.Conv2d) and m.bias is None]
    assert convs  # ShuffleNet convs have no bias
    counters = {int(m.num_batches_tracked) for m in subnet.features.modules()
                if isinstance(m, torch.nn.BatchNorm2d) and m.num_batches_tracked is not None}
    assert 7 in counters


def test_inheritance_does_not_rebuild_the_space(monkeypatch):
    """``ModelSpace.freeze`` re-instantiates the whole space (seconds per subnet); we slice per op."""
    supernet = to_one_shot(TamNasSpace(dataset="fashion_mnist"))

    def fail(*args, **kwargs):
        raise AssertionError("inherit_subnet must not call ModelSpace.freeze")

    monkeypatch.setattr(type(supernet), "freeze", fail)
    arch = random_architecture(random.Random(2))
    assert isinstance(inherit_subnet(supernet, arch), Subnet)
