"""Data of supernet training: per-epoch seeded order and augmentation, sharded per rank (docs/architecture.md §6).

Data order (``DistributedSampler.set_epoch``), augmentation and attack random starts are
reseeded from (seed, epoch, rank) at each epoch start, so ``--resume`` continues exactly like
an uninterrupted run: :func:`derive_seed` turns such a tuple into a seed.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytorch_lightning as pl
import torch
from torch.utils.data import DataLoader, DistributedSampler, Subset

from .data import get_splits
from .supernet_config import SupernetConfig

__all__ = ["EpochSeededSampler", "SupernetDataModule", "derive_seed"]


def derive_seed(*parts: Any) -> int:
    """A 63-bit seed from the SHA-256 of ``parts`` (e.g. ``(seed, "attack", epoch, rank)``)."""
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


class EpochSeededSampler(DistributedSampler):
    """``DistributedSampler`` (also for one process) whose epoch also fixes the augmentation randomness.

    Lightning calls ``set_epoch(epoch)``: the order of epoch e is ``randperm(seed + e)``, the
    DataLoader's generator (worker seeds) is reseeded from (seed, e, rank), and the global
    torch RNG -- which torchvision's random crop/flip draw from in the main process -- is
    reseeded when the epoch's first batch is fetched. So an epoch's batches depend on
    (seed, epoch, rank) only, whatever ran before: a resumed run sees the same images.
    """

    def __init__(self, dataset: Any, *, num_replicas: int, rank: int, seed: int,
                 loader_generator: torch.Generator) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=seed, drop_last=False)
        self.loader_generator = loader_generator
        self.set_epoch(0)

    def set_epoch(self, epoch: int) -> None:
        super().set_epoch(epoch)
        self.loader_generator.manual_seed(derive_seed(self.seed, "loader", epoch, self.rank))

    def __iter__(self):  # noqa: ANN204 - runs lazily, right before the epoch's first fetch
        torch.manual_seed(derive_seed(self.seed, "augment", self.epoch, self.rank))
        return super().__iter__()


class SupernetDataModule(pl.LightningDataModule):
    """Train/validation splits with per-epoch seeded shuffling, sharded per rank."""

    def __init__(self, config: SupernetConfig) -> None:
        super().__init__()
        self.config = config
        self.splits = None

    def setup(self, stage: str | None = None) -> None:
        if self.splits is None:
            d = self.config.data
            self.splits = get_splits(d.dataset, d.root, val_size=d.val_size, seed=d.split_seed,
                                     train_subset=d.train_subset, val_subset=d.val_subset,
                                     augment=d.augment, download=d.download)

    def _rank_world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        d = self.config.data
        generator = torch.Generator()
        sampler = EpochSeededSampler(self.splits.train, num_replicas=world, rank=rank, seed=self.config.seed,
                                     loader_generator=generator)
        return DataLoader(self.splits.train, batch_size=d.batch_size, sampler=sampler, generator=generator,
                          num_workers=d.num_workers, persistent_workers=d.num_workers > 0)

    def val_dataloader(self) -> DataLoader:
        rank, world = self._rank_world()
        v = self.config.validation
        val = self.splits.val
        if v.examples is not None and v.examples < len(val):
            val = Subset(val, range(v.examples))
        shard = Subset(val, range(rank, len(val), world)) if world > 1 else val  # no padding duplicates
        return DataLoader(shard, batch_size=v.batch_size or self.config.data.eval_batch_size, shuffle=False,
                          num_workers=self.config.data.num_workers)

    def recalibration_loader(self, epoch: int) -> DataLoader:
        """Training batches for BN recalibration of the probe; same on every rank."""
        g = torch.Generator().manual_seed(derive_seed(self.config.seed, "bn", epoch))
        return DataLoader(self.splits.train, batch_size=self.config.data.batch_size, shuffle=True,
                          generator=g, num_workers=0)
