"""The one-shot supernet: NNI's mixed ops over :class:`~search_space.supernet.TamNasSpace`.

``RandomOneShot().mutate_model`` replaces every ``LayerChoice`` with a path-sampling layer and
every mutable conv/BN with a mixed op that slices channels, so all subnets share weights. We
activate architectures ourselves (a seeded sampler lives in ``trainers``), because NNI's own
``Categorical.random()`` is unseeded.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from nni.nas.oneshot.pytorch.supermodule.operation import MixedBatchNorm2d, MixedConv2d
from nni.nas.strategy import RandomOneShot

from .encoding import Architecture
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


@contextmanager
def _nni_freeze_workaround() -> Iterator[None]:
    """Work around two NNI 3.0 bugs in ``MixedOperation.freeze`` (DESIGN §8).

    ``MixedConv2d.freeze_weight`` returns ``{"bias": None}`` for ``bias=False`` convs, which the
    frozen ``Conv2d.load_state_dict`` rejects; ``MixedBatchNorm2d.freeze_weight`` omits
    ``num_batches_tracked``, which ``load_state_dict`` requires. We patch both for the duration
    of one freeze only.
    """
    conv_orig, bn_orig = MixedConv2d.freeze_weight, MixedBatchNorm2d.freeze_weight

    def conv_freeze_weight(self: MixedConv2d, **kwargs: Any) -> dict[str, Any]:
        state = conv_orig(self, **kwargs)
        if state.get("bias", 0) is None:
            del state["bias"]
        return state

    def bn_freeze_weight(self: MixedBatchNorm2d, *args: Any, **kwargs: Any) -> dict[str, Any]:
        state = bn_orig(self, *args, **kwargs)
        if self.num_batches_tracked is not None:
            state["num_batches_tracked"] = self.num_batches_tracked
        return state

    MixedConv2d.freeze_weight = conv_freeze_weight  # type: ignore[method-assign]
    MixedBatchNorm2d.freeze_weight = bn_freeze_weight  # type: ignore[method-assign]
    try:
        yield
    finally:
        MixedConv2d.freeze_weight = conv_orig  # type: ignore[method-assign]
        MixedBatchNorm2d.freeze_weight = bn_orig  # type: ignore[method-assign]


def inherit_subnet(supernet: TamNasSpace, arch: Architecture) -> Subnet:
    """A standalone :class:`Subnet` for ``arch`` holding a copy of the supernet's weights.

    Its outputs equal the supernet's with ``arch`` active (same mode, same BN statistics).
    """
    with _nni_freeze_workaround(), torch.no_grad():
        frozen = supernet.freeze(arch.to_sample())
        subnet = Subnet(arch, supernet.space_config)
        subnet.load_state_dict(frozen.state_dict())
    return subnet.train(supernet.training)
