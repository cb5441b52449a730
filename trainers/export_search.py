"""The search-ready export of a supernet: per-block weight shards and cached trial images.

A search trial needs, of a whole supernet checkpoint (optimizer state included; 12,360 tensors
for the quick supernet), only the stem, the head and its 16 chosen (layer, block) candidates
with their BN statistics, plus the same validation images and BN-recalibration batches as every
other trial. The export lays exactly that out, next to the checkpoint's run (docs/architecture.md §12)::

    RUN/search/manifest.json        format, space, ε, data settings, the checkpoint it came from
    RUN/search/supernet.json        the supernet record (search_space/record.py), beside it
    RUN/search/stem_head.pt         layer_one.* and head.* tensors
    RUN/search/blocks/lII_bBB.pt    candidate BB of layer II at full width (max ratio), with BN stats
    RUN/search/trial_data/*.pt      validation images + BN batches, one file per evaluation setting

Every ``.pt`` is a flat ``{name: tensor}`` dict written atomically with ``torch.save`` and read
with ``torch.load(weights_only=True)``. A subnet takes the *leading slice* of each full-width
tensor (:func:`search_space.subnet_weights`), which is what NNI's mixed ops hand to
``inherit_subnet`` (tested bit-identical).

``python -m trainers export-search CKPT [--out DIR]`` writes it on demand; supernet training
writes it once at the end; a search trial given an older checkpoint writes it on first use.

This module imports the heavy parts (the checkpoint reader, torchvision for the images) only
inside the functions that *write*; :mod:`search_space.subnet_weights` reads without them.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from search_space.files import atomic_write_text, file_lock
from search_space.subnet_weights import (
    EXPORT_DIR,
    EXPORT_FORMAT,
    EXPORT_VERSION,
    MANIFEST,
    TrialDataKey,
    block_file,
    checkpoint_stamp,
    export_dir_for,
    trial_data_file,
)

__all__ = ["add_arguments", "ensure_export", "ensure_trial_data", "export_search", "run", "write_trial_data"]

logger = logging.getLogger(__name__)

def _save(obj: Any, path: Path) -> None:
    from trainers.checkpoint import atomic_torch_save

    atomic_torch_save(obj, path)


def _shards(weights: dict[str, torch.Tensor]) -> tuple[dict[str, torch.Tensor], dict[tuple[int, int], dict]]:
    """``stem_head`` tensors and ``{(layer, block): {rest: tensor}}`` of a one-shot supernet state dict."""
    stem_head: dict[str, torch.Tensor] = {}
    blocks: dict[tuple[int, int], dict[str, torch.Tensor]] = {}
    for name, tensor in weights.items():
        t = tensor.detach().contiguous().clone()  # own storage: a shard holds only its tensors
        parts = name.split(".")
        if parts[0] == "features":
            layer, block, rest = int(parts[1]), int(parts[2]), ".".join(parts[3:])
            blocks.setdefault((layer, block), {})[rest] = t
        elif parts[0] in ("layer_one", "head"):
            stem_head[name] = t
        else:
            raise ValueError(f"supernet tensor {name!r} is neither stem, head nor a choice block")
    return stem_head, blocks


def export_search(checkpoint: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """Write the search-ready export of ``checkpoint`` into ``out`` (default ``RUN/search``); returns it.

    The export is built in a temporary sibling directory and swapped in, so a reader sees the old
    export or the new one, never a mix; cached trial data of the old export is kept (it depends on
    the data settings, not on the weights).
    """
    from search_space.record import RecordError, SupernetRecord, record_beside_checkpoint
    from trainers.checkpoint import MODEL_PREFIX as PREFIX
    from trainers.checkpoint import CheckpointError, _meta, checkpoint_space, load_checkpoint

    ckpt_path = Path(checkpoint)
    out = Path(out) if out is not None else export_dir_for(ckpt_path)
    t = time.monotonic()
    ckpt = load_checkpoint(ckpt_path)
    space = checkpoint_space(ckpt, ckpt_path)
    meta = _meta(ckpt, ckpt_path)
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{ckpt_path}: no state_dict")
    weights = {k[len(PREFIX):]: v for k, v in state.items() if k.startswith(PREFIX)}
    try:
        stem_head, blocks = _shards(weights)
    except ValueError as e:
        raise CheckpointError(f"{ckpt_path}: {e}") from None
    config = meta.get("config") or {}
    try:
        data = {k: config["data"][k] for k in ("val_size", "split_seed")}
        data["root"] = config["data"].get("root")
        epsilon = float(config["adversarial"]["epsilon"])
    except (KeyError, TypeError, ValueError) as e:
        raise CheckpointError(f"{ckpt_path}: tamnas.config lacks the data/adversarial settings a trial needs "
                              f"({type(e).__name__}: {e})") from None
    nonfinite = sorted(k for k, v in weights.items() if v.is_floating_point() and not torch.isfinite(v).all())
    if nonfinite:
        logger.warning("%s: %d tensor(s) hold NaN/inf (e.g. %s); trials of subnets using them will fail",
                       ckpt_path, len(nonfinite), nonfinite[0])

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        os.chmod(tmp, 0o777 & ~_umask())
        files: list[dict[str, Any]] = []
        _save(stem_head, tmp / "stem_head.pt")
        for (layer, block), tensors in sorted(blocks.items()):
            _save(tensors, tmp / block_file(layer, block))
            files.append({"layer": layer, "block": block, "file": block_file(layer, block),
                          "bytes": (tmp / block_file(layer, block)).stat().st_size})
        record_file = _write_record(ckpt_path, tmp, out, record_beside_checkpoint, SupernetRecord, RecordError)
        if (out / "trial_data").is_dir():
            shutil.copytree(out / "trial_data", tmp / "trial_data")
        manifest = {
            "format": EXPORT_FORMAT, "version": EXPORT_VERSION, "space": space.to_dict(),
            "checkpoint": {"file": os.path.relpath(ckpt_path.absolute(), out.absolute()), **checkpoint_stamp(ckpt_path)},
            "epoch": ckpt.get("epoch"), "global_step": ckpt.get("global_step"),
            "epsilon": epsilon, "data": data, "record": record_file,
            "stem_head": {"file": "stem_head.pt", "bytes": (tmp / "stem_head.pt").stat().st_size},
            "blocks": files, "nonfinite": nonfinite,
        }
        atomic_write_text(tmp / MANIFEST, json.dumps(manifest, indent=1) + "\n")  # last: marks the export complete
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{os.getpid()}")
            os.replace(out, old)
        os.replace(tmp, out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = sum(f["bytes"] for f in files) + manifest["stem_head"]["bytes"]
    logger.info("search export %s: %d block shards + stem/head, %.1f MB of weights (checkpoint %.1f MB), %.1f s",
                out, len(files), total / 1e6, ckpt_path.stat().st_size / 1e6, time.monotonic() - t)
    return out


def _umask() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return umask


def _write_record(ckpt_path: Path, tmp: Path, out: Path, beside: Any, record_cls: Any,
                  record_error: Any) -> str | None:
    """The supernet record beside the export (the run's, re-pointed at the checkpoint; else built from it)."""
    import dataclasses

    target = tmp / "supernet.json"
    run_record = beside(ckpt_path)
    # checkpoint.file is relative to the record's directory: the export's final place, ``out``
    rel = os.path.relpath(ckpt_path.absolute(), out.absolute())
    try:
        if run_record.is_file() and ckpt_path.name == "last.ckpt":
            record = record_cls.load(run_record)
        else:
            from trainers.supernet_record import record_from_checkpoint

            record_from_checkpoint(ckpt_path, target)
            record = record_cls.load(target)
        dataclasses.replace(record, checkpoint_file=rel).save(target)
    except (record_error, ValueError, OSError) as e:
        logger.warning("%s: no supernet record beside the search export (%s)", ckpt_path, e)
        return None
    return "supernet.json"


def ensure_export(checkpoint: str | os.PathLike, out: str | os.PathLike | None = None) -> Path:
    """The export of ``checkpoint``, written first if it is missing or was made from other bytes.

    Concurrent callers (trials starting together) take a lock: one writes, the others reuse it.
    """
    from search_space.subnet_weights import export_is_current

    out = Path(out) if out is not None else export_dir_for(checkpoint)
    if export_is_current(out, checkpoint):
        return out
    with file_lock(out.with_name(f".{out.name}.lock")):
        if not export_is_current(out, checkpoint):
            logger.info("%s: writing its search export %s (once)", checkpoint, out)
            export_search(checkpoint, out)
    return out


# --------------------------------------------------------------------------- trial images
def draw_trial_data(key: TrialDataKey, root: str | os.PathLike | None) -> dict[str, torch.Tensor]:
    """The validation images and BN batches of one evaluation setting, drawn as the trial draws them.

    Validation: the first ``examples`` images of the seeded validation split, in order. BN batches:
    the first ``bn_batches`` batches of the training split's loader shuffled with ``seed``, its
    augmentation drawn from the global RNG seeded with ``seed`` (as
    :func:`trainers.search_trial.score_inherited` does).
    """
    from trainers.data import get_splits, make_loader

    splits = get_splits(key.dataset, root, val_size=key.val_size, seed=key.split_seed, val_subset=key.examples)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(key.seed)
        bn: list[torch.Tensor] = []
        for x, _ in make_loader(splits.train, key.batch_size, shuffle=True, seed=key.seed):
            if len(bn) >= key.bn_batches:
                break
            bn.append(x)
    xs, ys = zip(*make_loader(splits.val, key.batch_size, shuffle=False), strict=True)
    val_x, val_y = torch.cat(xs), torch.cat(ys)
    out = {"val_y": val_y.to(torch.int64)}
    for name, x in (("val_x", val_x), *((f"bn_{i}", b) for i, b in enumerate(bn))):
        u8 = torch.round(x * 255).clamp(0, 255).to(torch.uint8)
        # images are k/255 (ToTensor); store them as bytes where that is lossless (4x smaller)
        out[name] = u8 if torch.equal(u8.to(torch.float32).div(255), x) else x
    return out


def write_trial_data(export: str | os.PathLike, key: TrialDataKey, root: str | os.PathLike | None) -> Path:
    path = Path(export) / trial_data_file(key)
    data = draw_trial_data(key, root)
    _save({"key": key.name(), **data}, path)
    logger.info("cached trial images %s (%.1f MB)", path, path.stat().st_size / 1e6)
    return path


def ensure_trial_data(export: str | os.PathLike, key: TrialDataKey, root: str | os.PathLike | None) -> Path:
    """The cached trial images of ``key`` in ``export``, drawn first (under the export's lock) if missing."""
    path = Path(export) / trial_data_file(key)
    if path.is_file():
        return path
    export = Path(export)
    with file_lock(export.with_name(f".{export.name}.lock")):
        if not path.is_file():
            write_trial_data(export, key, root)
    return path


# --------------------------------------------------------------------------- CLI
def add_arguments(p: argparse.ArgumentParser) -> None:
    """Arguments of ``python -m trainers export-search``."""
    from trainers.cli import add_out_argument

    p.add_argument("checkpoint", help="supernet checkpoint (RUN/checkpoints/last.ckpt)")
    add_out_argument(p, f"export directory (default: RUN/{EXPORT_DIR})")
    p.add_argument("--data-root", help="data directory for the cached trial images (default: the supernet's)")
    p.add_argument("--device", default="auto", help="cache the images of this device's default trial sizes "
                                                   "(auto: cuda if visible, else cpu)")


def run(args: argparse.Namespace) -> int:
    """Entry point of ``python -m trainers export-search``."""
    from trainers.cli import usage_error

    try:
        out = export_search(args.checkpoint, args.out)
        write_default_trial_data(out, args.device, args.data_root)
    except (OSError, ValueError) as e:  # CheckpointError is a ValueError, DataNotFoundError an OSError
        return usage_error(e)
    return 0


def write_default_trial_data(export: str | os.PathLike, device: str = "auto",
                             data_root: str | None = None) -> Path:
    """Cache the images of the trial's default sizes on ``device`` (what a flag-less trial reads)."""
    from search_space.subnet_weights import SearchExport
    from trainers.search_trial import trial_data_key, trial_settings

    exp = SearchExport(export)
    settings = trial_settings(exp.epsilon, device)
    return ensure_trial_data(export, trial_data_key(exp, settings), data_root or exp.data.get("root"))


def export_at_end_of_training(checkpoint: str | os.PathLike) -> None:
    """Supernet training's last step: the search export of its ``last.ckpt`` (failures only logged)."""
    try:
        out = export_search(checkpoint)
        write_default_trial_data(out)
    except (OSError, ValueError) as e:
        logger.warning("%s: search export not written (%s); a search trial writes it on first use", checkpoint, e)
