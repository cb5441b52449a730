"""One-shot adversarial supernet training (paper §III-C, §III-D, §IV-A1, Algorithm 1).

NNI turns :class:`~search_space.supernet.TamNasSpace` into a weight-sharing supernet of mixed
ops (:func:`search_space.oneshot.to_one_shot`); :class:`~trainers.supernet_module.SupernetModule`
trains it in Lightning's manual optimization with the configured training method (default
TRADES-YOPO-5-3), one sampled architecture at a time. The pieces:

* :mod:`trainers.supernet_config` -- the config (``configs/supernet/*.yml``);
* :mod:`trainers.supernet_data` -- splits, per-epoch seeded order and augmentation;
* :mod:`trainers.supernet_module` -- the LightningModule: training step, probe, checkpoint entry;
* this module -- the Lightning ``Trainer``, :func:`train_supernet` and the command line.

Reproducibility: the sampler's state, the weights, the optimizer and Lightning's loop state
go into a checkpoint at the end of every epoch (:mod:`trainers.checkpoint`); data order,
augmentation and attack random starts depend on (seed, epoch, rank) only, so ``--resume``
continues exactly like an uninterrupted run.

Command line: ``python -m trainers supernet --config configs/supernet/<preset>.yml``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import TQDMProgressBar

from search_space.encoding import atomic_write_text

from .checkpoint import AtomicCheckpointIO, CheckpointError, load_checkpoint
from .cli import add_out_argument, usage_error
from .config import ConfigError, config_to_dict, in_nni_trial, save_resolved
from .supernet_config import SupernetConfig, ValidationConfig, load_supernet_config
from .supernet_data import SupernetDataModule
from .supernet_module import LAST_CHECKPOINT, SupernetModule

__all__ = [
    "SupernetConfig",
    "SupernetDataModule",
    "SupernetModule",
    "ValidationConfig",
    "add_arguments",
    "load_supernet_config",
    "run",
    "train_supernet",
]

logger = logging.getLogger(__name__)


class EpochProgressBar(TQDMProgressBar):
    """Lightning's progress bar, its description ``epoch 1/4`` (epochs of the total) instead of ``Epoch 0``."""

    def on_train_epoch_start(self, trainer: pl.Trainer, *args: Any) -> None:
        super().on_train_epoch_start(trainer, *args)
        self.train_progress_bar.set_description(f"epoch {trainer.current_epoch + 1}/{trainer.max_epochs}")


def show_progress_bar(config: SupernetConfig) -> bool:
    """The progress bar is on where configured and not inside an NNI trial (one log line per epoch there)."""
    return config.trainer.progress_bar and not in_nni_trial()


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
    progress = show_progress_bar(config)
    return pl.Trainer(
        accelerator=t.accelerator, devices=devices, num_nodes=t.num_nodes, strategy=strategy,
        precision=t.precision, deterministic=t.deterministic, max_epochs=max_epochs,
        logger=TensorBoardLogger(str(out), name="tensorboard", version=""),
        enable_checkpointing=False,  # SupernetModule writes checkpoints/last.ckpt itself, every epoch
        plugins=[AtomicCheckpointIO()], enable_progress_bar=progress,
        callbacks=[EpochProgressBar()] if progress else [],
        log_every_n_steps=t.log_every_n_steps, num_sanity_val_steps=0,
        check_val_every_n_epoch=v.every_n_epochs,
        limit_val_batches=v.max_batches if v.max_batches is not None else 1.0,
        use_distributed_sampler=False, inference_mode=False, enable_model_summary=False,
        default_root_dir=str(out),
    )


def _warn_if_changed(ckpt: Path, config: SupernetConfig) -> None:
    """Resuming with another config is allowed, with a warning naming the sections that differ.

    The trainer section and the data root (data may move) are not compared.
    """
    saved = dict(load_checkpoint(ckpt).get("tamnas", {}).get("config", {}))
    now = config_to_dict(config)
    for cfg in (saved, now):
        cfg.pop("trainer", None)
        if isinstance(cfg.get("data"), dict):
            cfg["data"] = {k: v for k, v in cfg["data"].items() if k != "root"}
    changed = sorted(k for k in set(saved) | set(now) if saved.get(k) != now.get(k))
    if changed:
        logger.warning("resuming with a config that differs from the checkpoint's in %s", changed)


def train_supernet(config: SupernetConfig, out: str | os.PathLike, *, epochs: int | None = None,
                   resume: bool = False, devices: int | None = None,
                   report_to_nni: bool | None = None, config_path: str | None = None) -> dict[str, Any]:
    """Train (or resume) a supernet; returns a summary with the final probe metrics.

    Parameters
    ----------
    config : SupernetConfig
        Its ``data.root`` is recorded as an absolute path (the default root if unset), so the
        checkpoint's users find the data from any directory.
    out : path
        Output directory: ``config.resolved.yml``, ``checkpoints/last.ckpt`` and its record
        ``supernet.json`` (:mod:`trainers.supernet_record`), ``tensorboard/``,
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
    config = config.with_absolute_data_root()
    max_epochs = epochs if epochs is not None else config.total_epochs
    if config.trainer.threads:
        torch.set_num_threads(config.trainer.threads)
    if resume:
        _warn_if_changed(ckpt, config)
    pl.seed_everything(config.seed, workers=True, verbose=False)
    module = SupernetModule(config, report_to_nni=report_to_nni, log_dir=out,
                            log_epochs=not show_progress_bar(config))
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
        __import__("trainers.export_search").export_search.export_at_end_of_training(ckpt)  # RUN/search
        if module.report_to_nni:
            import nni

            nni.report_final_result(result if result is not None else {"default": 0.0})
    return summary


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m trainers supernet``."""
    parser.add_argument("--config", required=True, help="YAML config (configs/supernet/*.yml)")
    add_out_argument(parser, "output directory (default: runs/supernet/<config name>, or the NNI trial's "
                             "output directory)")
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
    if args.out:
        out = Path(args.out)
    elif trial and os.environ.get("NNI_OUTPUT_DIR"):
        out = Path(os.environ["NNI_OUTPUT_DIR"]) / "supernet"
    else:
        out = Path("runs") / "supernet" / Path(args.config).stem
    try:
        config = load_supernet_config(args.config, overrides, params)
        summary = train_supernet(config, out, epochs=args.epochs, resume=args.resume,
                                 report_to_nni=trial, config_path=str(args.config))
    except (ConfigError, CheckpointError) as e:
        return usage_error(e)
    final = summary.get("final") or {}
    logger.info("done in %.0f s: %s", summary["wall_seconds"],
                {k: final.get(k) for k in ("clean_acc", "adv_acc", "params")})
    return 0
