"""Writing the supernet record (:mod:`search_space.record`) of a training run or of a checkpoint.

Supernet training calls :func:`write_record` after every epoch's ``checkpoints/last.ckpt``
(rank 0), so ``<out>/supernet.json`` always describes the checkpoint next to it. For a checkpoint
without one (an older run, a copied file)::

    python -m trainers record runs/supernet/cifar10_2s1_eps8/checkpoints/last.ckpt

writes ``runs/supernet/cifar10_2s1_eps8/supernet.json`` (or ``--out PATH``; for a kept
``checkpoints/epoch0100.ckpt``, ``supernet.epoch0100.json``, which the tuner's ``supernet`` classArg
also takes).
"""

from __future__ import annotations

import argparse
import logging
import os
from pathlib import Path
from typing import Any

from search_space.record import (
    PhaseRecord,
    RecordError,
    SupernetRecord,
    file_sha256,
    record_beside_checkpoint,
)

from .checkpoint import CheckpointError, checkpoint_space, load_checkpoint
from .cli import add_out_argument, usage_error
from .config import ConfigError, build_config, default_root
from .sampler import PhaseConfig, SamplerConfig
from .supernet_config import SupernetConfig

LAST_CHECKPOINT = "last.ckpt"  # what training keeps up to date; its record is RUN/supernet.json

__all__ = ["add_arguments", "build_record", "record_from_checkpoint", "run", "trained_ratios", "write_record"]

logger = logging.getLogger(__name__)


def trained_ratios(phase: PhaseConfig, trained_epochs: int, widen_unit: str, steps_per_epoch: float
                   ) -> tuple[float, ...]:
    """The ratio set in effect at the last trained epoch (or step) of ``phase``; ``()`` if it trained none.

    A joint phase's ratio sets only grow, so this is every ratio the phase allowed so far.
    """
    if trained_epochs <= 0:
        return ()
    schedule = phase.ratio_schedule()
    if widen_unit == "epoch":
        elapsed = trained_epochs - 1
    else:
        elapsed = max(0, round(trained_epochs * steps_per_epoch) - 1)
    return schedule[min(len(schedule) - 1, elapsed // phase.widen_every)]


def _phase_records(config: SupernetConfig, epochs_trained: int, global_step: int) -> tuple[PhaseRecord, ...]:
    sampler: SamplerConfig = config.sampler
    steps_per_epoch = global_step / epochs_trained if epochs_trained else 0.0
    out = []
    for i, phase in enumerate(sampler.phases):
        start = sampler.phase_start(i)
        trained = max(0, epochs_trained - start)
        if i < len(sampler.phases) - 1:  # epochs past the end stay in the last phase
            trained = min(trained, phase.epochs)
        ratios = trained_ratios(phase, trained, sampler.widen_unit, steps_per_epoch)
        out.append(PhaseRecord(phase.name, (start, start + phase.epochs), trained, config.phase_adversarial(i).method,
                               phase.sample_ratios, ratios, tuple(float(x) for x in phase.param_range)))
    return tuple(out)


def build_record(config: SupernetConfig, checkpoint: str | os.PathLike, record_path: str | os.PathLike, *,
                 epochs_trained: int, global_step: int) -> SupernetRecord:
    """The record of ``checkpoint`` (its bytes are hashed), trained ``epochs_trained`` epochs with ``config``."""
    checkpoint, record_path = Path(checkpoint), Path(record_path)
    root = config.data.root if config.data.root is not None else default_root()
    return SupernetRecord(
        space=config.space, epsilon=float(config.adversarial.epsilon), method=config.adversarial.method,
        seed=config.seed, blocks=config.sampler.blocks, epochs_trained=epochs_trained, global_step=global_step,
        phases=_phase_records(config, epochs_trained, global_step),
        checkpoint_file=os.path.relpath(checkpoint.absolute(), record_path.absolute().parent),
        checkpoint_sha256=file_sha256(checkpoint), checkpoint_bytes=checkpoint.stat().st_size,
        data_root=os.path.abspath(root))


def write_record(config: SupernetConfig, checkpoint: str | os.PathLike, *, epochs_trained: int, global_step: int,
                 record_path: str | os.PathLike | None = None) -> SupernetRecord:
    """Build and save the record of ``checkpoint`` (default place: :func:`record_beside_checkpoint`)."""
    path = Path(record_path) if record_path is not None else record_beside_checkpoint(checkpoint)
    record = build_record(config, checkpoint, path, epochs_trained=epochs_trained, global_step=global_step)
    return record.save(path)


def record_from_checkpoint(checkpoint: str | os.PathLike, out: str | os.PathLike | None = None) -> SupernetRecord:
    """Write the record of an existing checkpoint from what it holds (config, epoch, step).

    Default place: ``RUN/supernet.json`` for ``RUN/checkpoints/last.ckpt`` (where training writes
    it), ``RUN/supernet.<name>.json`` for another checkpoint of the run (``epoch0100.ckpt``).
    """
    path = Path(checkpoint)
    ckpt = load_checkpoint(path)
    space = checkpoint_space(ckpt, path)  # also refuses a file that is not a TAM-NAS supernet checkpoint
    meta: dict[str, Any] = ckpt["tamnas"]
    try:
        config = build_config(SupernetConfig, meta.get("config"), f"{path}: tamnas.config: ")
    except ConfigError as e:
        raise CheckpointError(str(e)) from None
    if config.space != space:
        raise CheckpointError(f"{path}: tamnas.config describes {config.space.to_dict()}, tamnas.space "
                              f"{space.to_dict()}")
    # Checkpoints are written at the end of an epoch: Lightning's "epoch" is that epoch's index.
    epochs = int(ckpt.get("epoch", -1)) + 1
    if epochs < 1:
        raise CheckpointError(f"{path}: epoch: {ckpt.get('epoch')!r}, not the checkpoint of a trained epoch")
    if out is None and path.name != LAST_CHECKPOINT:  # RUN/supernet.json describes RUN/checkpoints/last.ckpt
        out = record_beside_checkpoint(path).with_name(f"supernet.{path.stem}.json")
    record = write_record(config, path, epochs_trained=epochs, global_step=int(ckpt.get("global_step", 0)),
                          record_path=out)
    logger.info("wrote %s: %s width %d, %d epochs, search ratios %s, param range %s", record.path,
                space.dataset, space.width_multiplier, epochs, record.search_space_args()["ratios"] or "all",
                record.search_phase().param_range)
    return record


# --------------------------------------------------------------------------- CLI
def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m trainers record``."""
    parser.add_argument("checkpoint", help="supernet checkpoint (RUN/checkpoints/last.ckpt)")
    add_out_argument(parser, "record to write (default: RUN/supernet.json for RUN/checkpoints/last.ckpt, "
                             "RUN/supernet.NAME.json for another checkpoint NAME.ckpt)")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``python -m trainers record``."""
    try:
        record_from_checkpoint(args.checkpoint, args.out)
    except (CheckpointError, RecordError, OSError) as e:
        return usage_error(e)
    return 0
