"""The data-set registry: one entry per supported data set, read by the space, data and evaluation.

Torch-free, so the tuner, the config check and the report can use it without loading torch.
All inputs are 32x32 (Fashion-MNIST is padded from 28).
"""

from __future__ import annotations

from dataclasses import dataclass

# Paper Tables II-XII: PGD radii for CIFAR-10/SVHN.
PAPER_EPSILONS: tuple[float, ...] = (2 / 255, 4 / 255, 6 / 255, 8 / 255)


@dataclass(frozen=True)
class DatasetSpec:
    """What the code needs to know about one data set."""

    name: str
    in_channels: int
    num_classes: int
    # evaluation grid's L-inf radii, in input units (images in [0, 1])
    epsilons: tuple[float, ...]
    # training augmentation: pad 4 + random crop always; horizontal flip except for digits
    hflip: bool
    # padding that brings the native images to 32x32
    pad_to_32: int = 0
    resolution: int = 32


DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec("cifar10", 3, 10, PAPER_EPSILONS, hflip=True),
    "svhn": DatasetSpec("svhn", 3, 10, PAPER_EPSILONS, hflip=False),
    # usually evaluated at eps = 0.1: the paper's grid scaled to end at 0.1
    "fashion_mnist": DatasetSpec("fashion_mnist", 1, 10,
                                 tuple(0.1 * e / PAPER_EPSILONS[-1] for e in PAPER_EPSILONS),
                                 hflip=True, pad_to_32=2),
}

DATASET_NAMES: tuple[str, ...] = tuple(DATASETS)


def dataset_spec(name: str) -> DatasetSpec:
    """The registry entry for ``name``; a ``ValueError`` naming the known data sets otherwise."""
    try:
        return DATASETS[name]
    except (KeyError, TypeError):
        raise ValueError(f"unknown data set {name!r}; expected one of {list(DATASET_NAMES)}") from None
