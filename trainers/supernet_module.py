"""The LightningModule of one-shot supernet training (paper Algorithm 1; docs/architecture.md §6).

:class:`SupernetModule` runs in manual optimization (NNI's own one-shot wrapper forces automatic
optimization, which cannot run a multi-pass adversarial step; docs/architecture.md §8): each step
it asks the seeded :class:`~trainers.sampler.ArchitectureSampler` for the architecture to train,
activates it on every mixed op (:func:`search_space.oneshot.activate`), and runs the phase's
training method (:mod:`trainers.methods`, default TRADES-YOPO-5-3) with ``self.optimizers()``
and ``self.manual_backward``. SGD with the learning rate set per epoch from the phase's schedule.

Under DDP all ranks draw the same architecture sequence from the same seed; this is asserted
with an all-gather whenever the architecture changes, and BN buffers are broadcast from rank 0
at the end of every epoch so that all ranks hold identical state.

Validation ("probe"): at the end of an epoch the probe architecture -- the one being trained
(``validation.probe: current``) or a fixed one drawn once from the first phase's distribution
(``fixed``) -- is cut out of the supernet with its weights (:func:`search_space.oneshot.inherit_subnet`),
its BN statistics are recalibrated on training batches (:func:`trainers.bn.recalibrate_bn`), and
its clean and PGD accuracy on the validation split are logged and, in an NNI trial, reported as
intermediate results.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from torch import Tensor

from search_space.encoding import Architecture, atomic_write_text
from search_space.oneshot import activate, inherit_subnet, to_one_shot
from search_space.params import count_params
from search_space.subnet_weights import nonfinite_tensors
from search_space.supernet import TamNasSpace

from .attacks import pgd_attack
from .bn import recalibrate_bn
from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, CheckpointError, check_space, checkpoint_space
from .config import config_to_dict, in_nni_trial
from .methods import NonFiniteLossError, training_method
from .sampler import ArchitectureSampler
from .supernet_config import SupernetConfig
from .supernet_data import derive_seed
from .supernet_record import LAST_CHECKPOINT, write_record

__all__ = ["LAST_CHECKPOINT", "SupernetModule", "state_digest"]

logger = logging.getLogger(__name__)


def state_digest(module: torch.nn.Module) -> str:
    """SHA-256 over every parameter and buffer (names, dtypes and bytes): equal iff the state is equal."""
    h = hashlib.sha256()
    for name, tensor in sorted(module.state_dict().items()):
        t = tensor.detach().cpu().contiguous()
        h.update(name.encode())
        h.update(str(t.dtype).encode())
        h.update(t.numpy().tobytes() if t.dtype != torch.bfloat16 else t.float().numpy().tobytes())
    return h.hexdigest()


class SupernetModule(pl.LightningModule):
    """Manual-optimization LightningModule that trains the one-shot supernet (Algorithm 1).

    Parameters
    ----------
    config : SupernetConfig
    report_to_nni : bool, optional
        Report validation metrics to NNI (default: when running as an NNI trial).
    log_dir : path, optional
        Where rank logs of sampled architectures are written (``architectures.rank{R}.jsonl``).
    log_epochs : bool
        Log one line per epoch (loss, probe accuracy, time): where no progress bar is shown.
    """

    def __init__(self, config: SupernetConfig, *, report_to_nni: bool | None = None,
                 log_dir: str | os.PathLike | None = None, log_epochs: bool = False) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.config = config
        self.supernet = to_one_shot(TamNasSpace(dataset=config.data.dataset,
                                                width_multiplier=config.width_multiplier, reading=config.reading))
        self.space = self.supernet.space_config
        self.sampler = ArchitectureSampler(config.sampler, self.space, config.seed)
        # One training method per sampler phase (a phase may override adversarial.method).
        self.methods = [training_method(config.phase_adversarial(i)) for i in range(len(config.sampler.phases))]
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
        self.log_epochs = log_epochs
        self._epoch_loss = [0.0, 0]  # sum of the step losses, steps

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
        if self.current_epoch > 0 and self.logger is not None and self.trainer.is_global_zero:
            # the last epoch's end-of-epoch metrics (logged after its checkpoint) reach the disk now:
            # a crash in this epoch loses no finished epoch from TensorBoard
            self.logger.experiment.flush()
        epoch = self.current_epoch
        lr = self.learning_rate(epoch)
        for group in self.optimizers().optimizer.param_groups:
            group["lr"] = lr
        # Augmentation (global RNG, worker seeds) and attack random starts depend only on
        # (seed, epoch, rank): a resumed run draws exactly what an uninterrupted one does.
        torch.manual_seed(derive_seed(self.config.seed, "epoch", epoch, self.global_rank))
        self.attack_generator = torch.Generator(device=self.device)
        self.attack_generator.manual_seed(derive_seed(self.config.seed, "attack", epoch, self.global_rank))
        self._epoch_start = time.monotonic()
        self._epoch_loss = [0.0, 0]
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
        metrics = self.methods[self.sampler.phase].step(
            self.supernet, x, y, self.optimizers(), backward=self.manual_backward, generator=self.attack_generator,
            step=step, batch=batch_idx)
        self._epoch_loss[0] += metrics["loss"]
        self._epoch_loss[1] += 1
        bs = x.shape[0]
        self.log("train/loss", metrics["loss"], prog_bar=True, batch_size=bs)
        for key in ("clean_acc", "adv_acc"):
            if key in metrics:
                self.log(f"train/{key}", metrics[key], prog_bar=True, batch_size=bs)
        self.log("train/params", float(self.sampler.current_params or 0), batch_size=bs)

    def _check_weights_finite(self) -> None:
        # A NaN gradient is applied before the next step's loss shows it; on an epoch's last step it
        # would reach last.ckpt, and resuming would diverge again.
        bad = nonfinite_tensors(self.supernet)
        if bad:
            raise NonFiniteLossError(float("nan"), what=f"supernet weights ({len(bad)} tensors, e.g. {bad[0]})",
                                     step=self.global_step)

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
        if self.log_epochs and self.global_rank == 0:
            self._log_epoch(record)
        self._check_weights_finite()
        if self.log_dir is not None:
            ckpt_dir = self.log_dir / "checkpoints"
            # the kept epoch first, last.ckpt last: a crash between them resumes the epoch before and writes both
            every = self.config.keep_checkpoint_every
            if every and (self.current_epoch + 1) % every == 0:
                self.trainer.save_checkpoint(ckpt_dir / f"epoch{self.current_epoch + 1:04d}.ckpt", weights_only=False)
            self.trainer.save_checkpoint(ckpt_dir / LAST_CHECKPOINT, weights_only=False)  # full state: exact resume
            if self.global_rank == 0:  # the record the search and the retrain read (search_space.record)
                write_record(self.config, ckpt_dir / LAST_CHECKPOINT, epochs_trained=self.current_epoch + 1,
                             global_step=self.global_step)

    def _log_epoch(self, record: dict[str, Any]) -> None:
        total, steps = self._epoch_loss
        probe = (f", probe clean {record['val_clean_acc']:.3f} adv {record['val_adv_acc']:.3f}"
                 if "val_clean_acc" in record else "")
        logger.info("epoch %d/%d (%s): loss %.4f over %d steps%s, %.0f s", self.current_epoch + 1,
                    self.trainer.max_epochs, self.methods[self.config.sampler.phase_index(self.current_epoch)].label(),
                    total / max(steps, 1), steps, probe, record["epoch_seconds"])

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
        n = self.config.validation.bn_batches
        if n > 0 and dm is not None:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(derive_seed(self.config.seed, "bn-aug", self.current_epoch))
                recalibrate_bn(probe, dm.recalibration_loader(self.current_epoch), n, device=self.device)
        self._probe = probe.eval()
        self._val_counts = torch.zeros(3, dtype=torch.float64, device=self.device)
        self._val_generator = torch.Generator(device=self.device)
        seed = self.config.seed if self.config.validation.seed is None else self.config.validation.seed
        self._val_generator.manual_seed(derive_seed(seed, "val", self.current_epoch, self.global_rank))

    def validation_step(self, batch: tuple[Tensor, Tensor], batch_idx: int) -> None:
        x, y = batch
        epsilon, steps, step_size = self.config.probe_attack()
        probe = self._probe
        with torch.no_grad():
            clean = (probe(x).argmax(1) == y).sum()
        with torch.enable_grad():
            x_adv = pgd_attack(probe, x, y, epsilon=epsilon, step_size=step_size, steps=steps,
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
