"""The one-shot supernet: NNI's mixed ops over :class:`~search_space.supernet.TamNasSpace`.

``RandomOneShot().mutate_model`` replaces every ``LayerChoice`` with a path-sampling layer and
every mutable conv/BN with a mixed op that slices channels, so all subnets share weights. We
activate architectures ourselves (a seeded sampler lives in ``trainers``), because NNI's own
``Categorical.random()`` is unseeded.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from nni.nas.oneshot.pytorch.supermodule.operation import MixedBatchNorm2d, MixedOperation
from nni.nas.strategy import RandomOneShot

from .architecture import Architecture
from .supernet import Subnet, TamNasSpace


def to_one_shot(space: TamNasSpace) -> TamNasSpace:
    """Turn a fresh ``TamNasSpace`` into a weight-sharing supernet (in place; returns it)."""
    return RandomOneShot().mutate_model(space)


def supernet_modules(supernet: TamNasSpace) -> Iterator[BaseSuperNetModule]:
    for module in supernet.modules():
        if isinstance(module, BaseSuperNetModule):
            yield module


def activate(supernet: TamNasSpace, arch: Architecture) -> None:
    """Make ``arch`` the active path of every mixed op (``module.resample(memo=sample)``)."""
    sample = arch.to_sample()
    for module in supernet_modules(supernet):
        module.resample(memo=sample)


def inherit_subnet(supernet: TamNasSpace, arch: Architecture) -> Subnet:
    """A standalone :class:`Subnet` for ``arch`` holding a copy of the supernet's weights.

    Its outputs equal the supernet's with ``arch`` active (same mode, same BN statistics).

    NOTE: we do not call ``supernet.freeze(sample)``. In NNI 3.0 it re-instantiates the whole
    ``ModelSpace`` (about 10 s on two cores, per subnet) and ``MixedOperation.freeze`` has two
    bugs (docs/architecture.md §8): it hands ``bias: None`` to ``load_state_dict`` for ``bias=False`` convs,
    and omits BN's ``num_batches_tracked``. Instead we build the subnet directly and fill it
    with NNI's own per-op slicing, ``MixedOperation.freeze_weight``, dropping ``None`` entries
    and copying ``num_batches_tracked``; ``load_state_dict(strict=True)`` checks that every
    tensor was found.
    """
    sample = arch.to_sample()
    subnet = Subnet(arch, supernet.space_config)
    source = dict(supernet.named_modules())
    state: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        for name, module in subnet.named_modules():
            if not any(True for _ in module.parameters(recurse=False)) and not any(
                    True for _ in module.buffers(recurse=False)):
                continue
            src = source[_supernet_module_name(name, arch)]
            if isinstance(src, MixedOperation):
                args = {**src.init_arguments}
                for arg, mutable in src.mutable_arguments.items():
                    args[arg] = mutable.freeze(sample)
                tensors = {k: v for k, v in src.freeze_weight(**args).items() if isinstance(v, torch.Tensor)}
                if isinstance(src, MixedBatchNorm2d) and src.num_batches_tracked is not None:
                    tensors["num_batches_tracked"] = src.num_batches_tracked
            else:
                tensors = dict(src.state_dict(keep_vars=False))
                tensors = {k: v for k, v in tensors.items() if "." not in k}
            for k, v in tensors.items():
                state[f"{name}.{k}"] = v.detach().clone()
        subnet.load_state_dict(state, strict=True)
    return subnet.train(supernet.training)


def _supernet_module_name(subnet_name: str, arch: Architecture) -> str:
    """``features.i.rest`` in a subnet is ``features.i.<block id>.rest`` in the supernet.

    The LayerChoice of layer ``i`` lists its candidates in block-id order (stride-2 layers
    stop at 17), so the candidate's name is the block id.
    """
    parts = subnet_name.split(".")
    if parts[0] == "features" and len(parts) >= 2:
        return ".".join([parts[0], parts[1], str(arch.blocks[int(parts[1])]), *parts[2:]])
    return subnet_name
