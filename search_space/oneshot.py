"""The one-shot supernet: NNI's mixed ops over :class:`~search_space.supernet.TamNasSpace`.

``RandomOneShot().mutate_model`` replaces every ``LayerChoice`` with a path-sampling layer and
every mutable conv/BN with a mixed op that slices channels, so all subnets share weights. We
activate architectures ourselves (a seeded sampler lives in ``trainers``), because NNI's own
``Categorical.random()`` is unseeded.
"""

from __future__ import annotations

from collections.abc import Iterator

from nni.nas.oneshot.pytorch.supermodule.base import BaseSuperNetModule
from nni.nas.strategy import RandomOneShot

from .encoding import Architecture
from .supernet import TamNasSpace


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
