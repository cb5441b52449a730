"""One-shot adversarial supernet training (paper §III-C, §III-D, §IV-A1, Algorithm 1).

NNI turns :class:`~search_space.supernet.TamNasSpace` into a weight-sharing supernet of mixed
ops (:func:`search_space.oneshot.to_one_shot`). NNI's own one-shot Lightning wrapper forces
automatic optimization, which cannot run a multi-pass adversarial step (DESIGN §8), so
:class:`SupernetModule` is a LightningModule in manual optimization: each step it asks the
seeded :class:`~trainers.sampler.ArchitectureSampler` for the architecture to train, activates
it on every mixed op (:func:`search_space.oneshot.activate`), and runs the configured
adversarial step (:func:`trainers.adversarial.adversarial_step`, default TRADES-YOPO-5-3)
with ``self.optimizers()`` and ``self.manual_backward``. SGD (momentum 0.9, weight decay 5e-4)
with the learning rate set per epoch from the phase's schedule.

Reproducibility: the sampler's state, the weights, the optimizer and Lightning's loop state
go into a checkpoint at the end of every epoch (:mod:`trainers.checkpoint`). Data order
(``DistributedSampler.set_epoch``), augmentation and attack random starts are reseeded from
(seed, epoch, rank) at each epoch start, so ``--resume`` continues exactly like an
uninterrupted run. Under DDP all ranks draw the same architecture sequence from the same
seed; this is asserted with an all-gather whenever the architecture changes, and BN buffers
are broadcast from rank 0 at the end of every epoch so that all ranks hold identical state.

Validation ("probe"): at the end of an epoch the probe architecture -- the one being trained
(``validation.probe: current``) or a fixed one drawn once from the first phase's
distribution (``fixed``) -- is cut out of the supernet with its weights
(:func:`search_space.oneshot.inherit_subnet`), its BN statistics are recalibrated on training
batches (:func:`trainers.bn.recalibrate_bn`), and its clean and PGD accuracy on the validation
split are logged and, in an NNI trial, reported as intermediate results.

Command line: ``python -m trainers supernet --config configs/supernet/<preset>.yml``.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import logging
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pytorch_lightning as pl
import torch
from torch import Tensor
from torch.utils.data import DataLoader, DistributedSampler, Subset

from search_space.encoding import Architecture, atomic_write_text
from search_space.oneshot import activate, inherit_subnet, to_one_shot
from search_space.params import count_params
from search_space.supernet import TamNasSpace

from .adversarial import AdversarialConfig, adversarial_step, make_adversarial_config
from .attacks import pgd_attack
from .bn import recalibrate_bn
from .checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    AtomicCheckpointIO,
    CheckpointError,
    check_space,
    checkpoint_space,
    load_checkpoint,
    load_supernet,
    subnet_from_checkpoint,
)
from .config import (
    ConfigError,
    DataConfig,
    OptimizerConfig,
    ProbeConfig,
    TrainerConfig,
    apply_overrides,
    build_config,
    check_positive,
    config_to_dict,
    in_nni_trial,
    load_yaml,
    one_of,
    save_resolved,
)
from .data import get_splits
from .sampler import ArchitectureSampler, SamplerConfig

__all__ = [
    "SupernetConfig",
    "SupernetDataModule",
    "SupernetModule",
    "ValidationConfig",
    "add_arguments",
    "load_supernet",
    "load_supernet_config",
    "run",
    "subnet_from_checkpoint",
    "train_supernet",
]

logger = logging.getLogger(__name__)

LAST_CHECKPOINT = "last.ckpt"


# --------------------------------------------------------------------------- config
@dataclass(frozen=True)
class ValidationConfig(ProbeConfig):
    """End-of-epoch probe: which architecture, the PGD attack, BN recalibration batches."""

    probe: Literal["current", "fixed"] = "fixed"


@dataclass(frozen=True)
class SupernetConfig:
    """A supernet training run (see ``configs/supernet/*.yml`` for the documented keys)."""

    sampler: SamplerConfig
    seed: int = 0
    width_multiplier: int = field(default=1, metadata={"check": one_of(1, 2, 4, 8)})
    data: DataConfig = field(default_factory=DataConfig)
    optimizer: OptimizerConfig = field(default_factory=OptimizerConfig)
    adversarial: AdversarialConfig = field(default_factory=AdversarialConfig,
                                           metadata={"parse": make_adversarial_config})
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)
    keep_checkpoint_every: int | None = field(default=None, metadata={"check": check_positive})
    description: str = ""

    @property
    def total_epochs(self) -> int:
        return self.sampler.total_epochs

    def phase_adversarial(self, phase: int) -> AdversarialConfig:
        """The training method of sampler phase ``phase`` (its ``method`` overrides ``adversarial.method``)."""
        method = self.sampler.phases[phase].method
        if method is None or method == self.adversarial.method:
            return self.adversarial
        return dataclasses.replace(self.adversarial, method=method)


def load_supernet_config(path: str | os.PathLike, overrides: list[str] | tuple[str, ...] = (),
                         params: dict[str, Any] | None = None) -> SupernetConfig:
    """Read and validate a supernet config; ``overrides`` are ``key=value`` strings, ``params`` a dict."""
    data = load_yaml(path)
    data = apply_overrides(data, list(overrides), source=f"{path} (--set)")
    if params:
        data = apply_overrides(data, [f"{k}={json.dumps(v)}" for k, v in params.items()],
                               source=f"{path} (NNI parameters)")
    config = build_config(SupernetConfig, data, f"{path}: ")
    try:  # feasibility of the parameter ranges is a config error too
        from search_space.encoding import SpaceConfig

        ArchitectureSampler(config.sampler, SpaceConfig.for_dataset(config.data.dataset, config.width_multiplier),
                            config.seed)
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
    return config


def _derive_seed(*parts: Any) -> int:
    digest = hashlib.sha256(":".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2**63 - 1)


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer (names, dtypes and bytes): equal iff the state is equal."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


# --------------------------------------------------------------------------- data
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
        self.loader_generator.manual_seed(_derive_seed(self.seed, "loader", epoch, self.rank))

    def __iter__(self):  # noqa: ANN204 - runs lazily, right before the epoch's first fetch
        torch.manual_seed(_derive_seed(self.seed, "augment", self.epoch, self.rank))
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
        val = self.splits.val
        shard = Subset(val, range(rank, len(val), world)) if world > 1 else val  # no padding duplicates
        return DataLoader(shard, batch_size=self.config.data.eval_batch_size, shuffle=False,
                          num_workers=self.config.data.num_workers)

    def recalibration_loader(self, epoch: int) -> DataLoader:
        """Training batches for BN recalibration of the probe; same on every rank."""
        g = torch.Generator().manual_seed(_derive_seed(self.config.seed, "bn", epoch))
        return DataLoader(self.splits.train, batch_size=self.config.data.batch_size, shuffle=True,
                          generator=g, num_workers=0)


# --------------------------------------------------------------------------- module
class SupernetModule(pl.LightningModule):
    """Manual-optimization LightningModule that trains the one-shot supernet (Algorithm 1).

    Parameters
    ----------
    config : SupernetConfig
    report_to_nni : bool, optional
        Report validation metrics to NNI (default: when running as an NNI trial).
    log_dir : path, optional
        Where rank logs of sampled architectures are written (``architectures.rank{R}.jsonl``).
    """

    def __init__(self, config: SupernetConfig, *, report_to_nni: bool | None = None,
                 log_dir: str | os.PathLike | None = None) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.config = config
        self.supernet = to_one_shot(TamNasSpace(dataset=config.data.dataset,
                                                width_multiplier=config.width_multiplier))
        self.space = self.supernet.space_config
        self.sampler = ArchitectureSampler(config.sampler, self.space, config.seed)
        self.active: Architecture | None = None
        self.attack_generator: torch.Generator | None = None
        self.report_to_nni = in_nni_trial() if report_to_nni is None else report_to_nni
        self.log_dir = Path(log_dir) if log_dir is not None else None
        self.history: list[dict[str, Any]] = []
        self._val_counts: Tensor | None = None
        self._probe: torch.nn.Module | None = None
        self._probe_arch: Architecture | None = None
        self._epoch_start = 0.0
        self._last_val: dict[str, Any] | None = None
        self.last_result: dict[str, Any] | None = None

    # ---------------------------------------------------------------- basics
    def forward(self, x: Tensor) -> Tensor:
        return self.supernet(x)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        o = self.config.optimizer
        return torch.optim.SGD(self.supernet.parameters(), lr=o.lr, momentum=o.momentum,
                               weight_decay=o.weight_decay, nesterov=o.nesterov)

    def learning_rate(self, epoch: int) -> float:
        o = self.config.optimizer
        return self.config.sampler.learning_rate(epoch, o.lr, o.lr_gamma)

    def _rank_log(self, record: dict[str, Any]) -> None:
        if self.log_dir is None:
            return
        path = self.log_dir / f"architectures.rank{self.global_rank}.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a") as f:
            f.write(json.dumps(record) + "\n")

    # ---------------------------------------------------------------- training
    def on_train_start(self) -> None:
        if self.log_dir is not None and self.global_step > 0:
            # After a resume, drop log lines of steps the restored checkpoint does not contain.
            path = self.log_dir / f"architectures.rank{self.global_rank}.jsonl"
            if path.exists():
                keep = [ln for ln in path.read_text().splitlines()
                        if ln and json.loads(ln).get("epoch", -1) < self.current_epoch]
                atomic_write_text(path, "".join(k + "\n" for k in keep))

    def on_train_epoch_start(self) -> None:
        epoch = self.current_epoch
        lr = self.learning_rate(epoch)
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = lr
        # Augmentation (global RNG, worker seeds) and attack random starts depend only on
        # (seed, epoch, rank): a resumed run draws exactly what an uninterrupted one does.
        torch.manual_seed(_derive_seed(self.config.seed, "epoch", epoch, self.global_rank))
        self.attack_generator = torch.Generator(device=self.device)
        self.attack_generator.manual_seed(_derive_seed(self.config.seed, "attack", epoch, self.global_rank))
        self._epoch_start = time.monotonic()
        self.log("lr", lr, on_step=False, on_epoch=True, rank_zero_only=True)
        self.log("phase", float(self.config.sampler.phase_index(epoch)), on_step=False, on_epoch=True,
                 rank_zero_only=True)

    def _check_same_architecture(self, arch: Architecture) -> None:
        if self.trainer is None or self.trainer.world_size <= 1:
            return
        genes = torch.tensor([v for g in arch.genes for v in g], device=self.device)
        gathered = self.all_gather(genes)
        if not bool((gathered == genes).all()):
            raise RuntimeError(f"DDP ranks activated different architectures at step {self.global_step}: "
                               f"{gathered.tolist()} -- every rank must use the same sampler seed")

    def training_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        step = self.global_step
        arch = self.sampler.architecture(self.current_epoch, step)
        if arch != self.active:
            activate(self.supernet, arch)
            self.active = arch
            self._check_same_architecture(arch)
            self._rank_log({"step": step, "epoch": self.current_epoch, "arch": arch.key,
                            "params": self.sampler.current_params,
                            "phase": self.config.sampler.phases[self.sampler.phase].name})
        metrics = adversarial_step(self.supernet, x, y, self.optimizers(), self.config.phase_adversarial(self.sampler.phase),
                                   backward=self.manual_backward, generator=self.attack_generator,
                                   step=step, batch=batch_idx)
        bs = x.shape[0]
        self.log("train/loss", metrics["loss"], prog_bar=True, batch_size=bs)
        for key in ("clean_acc", "adv_acc"):
            if key in metrics:
                self.log(f"train/{key}", metrics[key], prog_bar=True, batch_size=bs)
        self.log("train/params", float(self.sampler.current_params or 0), batch_size=bs)

    def on_train_epoch_end(self) -> None:
        if self.trainer.world_size > 1:
            # DDP averages gradients but BN running statistics are per rank: take rank 0's.
            for buf in self.supernet.buffers():
                torch.distributed.broadcast(buf, src=0)
        digest = state_digest(self.supernet)
        self._rank_log({"step": self.global_step, "epoch": self.current_epoch, "event": "epoch_end",
                        "state_digest": digest, "samples_drawn": self.sampler.samples_drawn})
        seconds = time.monotonic() - self._epoch_start
        self.log("time/epoch_s", seconds, on_step=False, on_epoch=True, rank_zero_only=True)
        record = {"epoch": self.current_epoch, "lr": self.learning_rate(self.current_epoch),
                  "epoch_seconds": seconds, "samples_drawn": self.sampler.samples_drawn}
        record.update(self._last_val or {})
        self.history.append(record)
        self._last_val = None
        if self.log_dir is not None:
            ckpt_dir = self.log_dir / "checkpoints"
            self.trainer.save_checkpoint(ckpt_dir / LAST_CHECKPOINT, weights_only=False)  # full state: exact resume
            every = self.config.keep_checkpoint_every
            if every and (self.current_epoch + 1) % every == 0:
                self.trainer.save_checkpoint(ckpt_dir / f"epoch{self.current_epoch + 1:04d}.ckpt", weights_only=False)

    # ---------------------------------------------------------------- validation (probe)
    def probe_architecture(self) -> Architecture:
        if self.config.validation.probe == "current" and self.active is not None:
            return self.active
        return self.sampler.probe_architecture()

    def on_validation_epoch_start(self) -> None:
        arch = self.probe_architecture()
        self._probe_arch = arch
        probe = inherit_subnet(self.supernet, arch).to(self.device)
        if self.active is not None:
            activate(self.supernet, self.active)
        dm = self.trainer.datamodule
        n = self.config.validation.bn_recalibration_batches
        if n > 0 and dm is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(_derive_seed(self.config.seed, "bn-aug", self.current_epoch))
                recalibrate_bn(probe, dm.recalibration_loader(self.current_epoch), n, device=self.device)
        self._probe = probe.eval()
        self._val_counts = torch.zeros(3, dtype=torch.float64, device=self.device)
        self._val_generator = torch.Generator(device=self.device)
        self._val_generator.manual_seed(_derive_seed(self.config.seed, "val", self.current_epoch, self.global_rank))

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        v = self.config.validation
        probe = self._probe
        with torch.no_grad():
            clean = (probe(x).argmax(1) == y).sum()
        with torch.enable_grad():
            x_adv = pgd_attack(probe, x, y, epsilon=v.epsilon, step_size=v.step_size, steps=v.steps,
                               generator=self._val_generator)
        with torch.no_grad():
            adv = (probe(x_adv).argmax(1) == y).sum()
        self._val_counts += torch.stack([clean.double(), adv.double(),
                                         torch.tensor(float(len(y)), dtype=torch.float64, device=self.device)])

    def on_validation_epoch_end(self) -> None:
        counts = self._val_counts
        if self.trainer.world_size > 1:
            counts = self.all_gather(counts).sum(0)
        clean, adv, n = (float(c) for c in counts)
        self._probe = None
        if n == 0:
            return
        arch = self._probe_arch
        params = count_params(arch, self.space)
        result = {"default": adv / n, "clean_acc": clean / n, "adv_acc": adv / n, "params": params,
                  "epoch": self.current_epoch, "probe": arch.key}
        self._last_val = {"val_clean_acc": clean / n, "val_adv_acc": adv / n, "probe": arch.key,
                          "probe_params": params}
        self.log("val/clean_acc", clean / n, rank_zero_only=True, prog_bar=True)
        self.log("val/adv_acc", adv / n, rank_zero_only=True, prog_bar=True)
        if self.report_to_nni and self.global_rank == 0:
            import nni

            nni.report_intermediate_result(result)
        self.last_result = result

    # ---------------------------------------------------------------- checkpoint
    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["tamnas"] = {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "space": self.space.to_dict(),
            "config": config_to_dict(self.config),
            "seed": self.config.seed,
            "sampler": self.sampler.state_dict(),
            "architecture": None if self.active is None else [list(g) for g in self.active.genes],
            "history": [dict(h) for h in self.history],
        }

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        meta = checkpoint.get("tamnas")
        if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
            raise CheckpointError("checkpoint has no TAM-NAS supernet metadata; cannot resume from it")
        check_space(checkpoint_space(checkpoint), self.space, "resume checkpoint")
        self.sampler.load_state_dict(meta["sampler"])
        self.history = list(meta.get("history", []))
        if meta.get("architecture"):
            self.active = Architecture.from_genes(meta["architecture"])
            activate(self.supernet, self.active)


# --------------------------------------------------------------------------- driver
def build_trainer(config: SupernetConfig, out: Path, *, max_epochs: int,
                  devices: int | None = None) -> pl.Trainer:
    """A Lightning ``Trainer`` for ``config`` (DDP by ``trainer.devices``/``num_nodes``/``strategy``)."""
    from pytorch_lightning.loggers import TensorBoardLogger

    t = config.trainer
    devices = devices if devices is not None else t.devices
    strategy = t.strategy
    if strategy == "auto" and devices * t.num_nodes > 1:
        strategy = "ddp_find_unused_parameters_true"  # only the active path gets gradients
    v = config.validation
    return pl.Trainer(
        accelerator=t.accelerator, devices=devices, num_nodes=t.num_nodes, strategy=strategy,
        precision=t.precision, deterministic=t.deterministic, max_epochs=max_epochs,
        logger=TensorBoardLogger(str(out), name="tensorboard", version=""),
        enable_checkpointing=False,  # SupernetModule writes checkpoints/last.ckpt itself, every epoch
        plugins=[AtomicCheckpointIO()], enable_progress_bar=t.progress_bar,
        log_every_n_steps=t.log_every_n_steps, num_sanity_val_steps=0,
        check_val_every_n_epoch=v.every_n_epochs,
        limit_val_batches=v.max_batches if v.max_batches is not None else 1.0,
        use_distributed_sampler=False, inference_mode=False, enable_model_summary=False,
        default_root_dir=str(out),
    )


def train_supernet(config: SupernetConfig, out: str | os.PathLike, *, epochs: int | None = None,
                   resume: bool = False, devices: int | None = None,
                   report_to_nni: bool | None = None, config_path: str | None = None) -> dict[str, Any]:
    """Train (or resume) a supernet; returns a summary with the final probe metrics.

    Parameters
    ----------
    config : SupernetConfig
    out : path
        Output directory: ``config.resolved.yml``, ``checkpoints/last.ckpt``, ``tensorboard/``,
        ``architectures.rank{R}.jsonl``, ``summary.json``.
    epochs : int, optional
        Stop after this many epochs in total (default: the sum of the phases' epochs). The
        schedule is not rescaled, so ``--epochs 2`` then ``--resume --epochs 4`` equals one
        4-epoch run.
    resume : bool
        Continue from ``out/checkpoints/last.ckpt``.
    """
    out = Path(out)
    ckpt = out / "checkpoints" / LAST_CHECKPOINT
    if resume and not ckpt.exists():
        raise CheckpointError(f"{ckpt}: nothing to resume from")
    if not resume and ckpt.exists():
        raise CheckpointError(f"{ckpt} exists: pass --resume to continue it, or choose another --out")
    max_epochs = epochs if epochs is not None else config.total_epochs
    if config.trainer.threads:
        torch.set_num_threads(config.trainer.threads)
    if resume:
        saved = load_checkpoint(ckpt)
        saved_cfg = saved.get("tamnas", {}).get("config", {})
        now_cfg = config_to_dict(config)
        changed = sorted(k for k in set(saved_cfg) | set(now_cfg)
                         if k != "trainer" and saved_cfg.get(k) != now_cfg.get(k))
        if changed:
            logger.warning("resuming with a config that differs from the checkpoint's in %s", changed)
        del saved
    pl.seed_everything(config.seed, workers=True, verbose=False)
    module = SupernetModule(config, report_to_nni=report_to_nni, log_dir=out)
    datamodule = SupernetDataModule(config)
    trainer = build_trainer(config, out, max_epochs=max_epochs, devices=devices)
    if trainer.global_rank == 0:
        save_resolved(config, out / "config.resolved.yml", source_config=config_path, epochs=max_epochs,
                      resolved_seed=config.seed)
        logger.info("supernet training: %s, %s, %d epochs -> %s", config.adversarial.name,
                    module.space.to_dict(), max_epochs, out)
        logger.info("sampler:\n%s", module.sampler.describe())
    start = time.monotonic()
    trainer.fit(module, datamodule=datamodule, ckpt_path=str(ckpt) if resume else None)
    wall = time.monotonic() - start
    result = getattr(module, "last_result", None)
    summary = {"epochs": trainer.current_epoch, "global_step": trainer.global_step,
               "wall_seconds": wall, "samples_drawn": module.sampler.samples_drawn,
               "final": result, "checkpoint": str(ckpt), "history": module.history}
    if trainer.global_rank == 0:
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
        if module.report_to_nni:
            import nni

            nni.report_final_result(result if result is not None else {"default": 0.0})
    return summary


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m trainers supernet``."""
    parser.add_argument("--config", required=True, help="YAML config (configs/supernet/*.yml)")
    parser.add_argument("--out", help="output directory (default: runs/supernet/<config name>, or the "
                                      "NNI trial's output directory)")
    parser.add_argument("--epochs", type=int, help="stop after N epochs in total (schedule unchanged)")
    parser.add_argument("--seed", type=int, help="override the config's seed")
    parser.add_argument("--resume", action="store_true", help="continue from OUT/checkpoints/last.ckpt")
    parser.add_argument("--devices", type=int, help="devices per node (DDP when > 1)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set data.batch_size=128 (repeatable)")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``python -m trainers supernet``."""
    trial = in_nni_trial()
    params: dict[str, Any] = {}
    if trial:
        import nni

        params = nni.get_next_parameter() or {}
    overrides = list(args.overrides)
    if args.seed is not None:
        overrides.append(f"seed={args.seed}")
    if args.devices is not None:
        overrides.append(f"trainer.devices={args.devices}")
    try:
        config = load_supernet_config(args.config, overrides, params)
    except ConfigError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    if args.out:
        out = Path(args.out)
    elif trial and os.environ.get("NNI_OUTPUT_DIR"):
        out = Path(os.environ["NNI_OUTPUT_DIR"]) / "supernet"
    else:
        out = Path("runs") / "supernet" / Path(args.config).stem
    try:
        summary = train_supernet(config, out, epochs=args.epochs, resume=args.resume,
                                 report_to_nni=trial, config_path=str(args.config))
    except CheckpointError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    final = summary.get("final") or {}
    logger.info("done in %.0f s: %s", summary["wall_seconds"],
                {k: final.get(k) for k in ("clean_acc", "adv_acc", "params")})
    return 0
