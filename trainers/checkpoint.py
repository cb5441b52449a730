"""Supernet checkpoints: atomic, ``torch.load(weights_only=True)``-loadable, space-checked.

A checkpoint is Lightning's checkpoint dict (``state_dict``, ``optimizer_states``, ``loops``,
``epoch``, ``global_step``, ...) written through :class:`AtomicCheckpointIO` -- a temporary file
in the same directory, then ``os.replace`` -- plus our own entry ``"tamnas"``::

    {"format": "tamnas-supernet", "version": 1, "space": {...}, "config": {...}, "seed": int,
     "sampler": {...}, "history": [{epoch metrics}, ...], "architecture": [[block, ratio id], ...]}

Everything in it is tensors or plain containers of numbers and strings (configs are dicts,
RNG states are int lists), so ``torch.load(path, weights_only=True)`` reads it and no code
is ever unpickled. Lightning resumes from it (``trainer.fit(ckpt_path=...)``), and the search
inherits subnet weights from it with :func:`load_supernet` / :func:`subnet_from_checkpoint`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import torch
from lightning_fabric.plugins.io.torch_io import TorchCheckpointIO

from search_space.encoding import Architecture, ArchitectureError, SpaceConfig
from search_space.oneshot import activate, inherit_subnet, to_one_shot
from search_space.supernet import Subnet, TamNasSpace

__all__ = [
    "CHECKPOINT_FORMAT",
    "AtomicCheckpointIO",
    "CheckpointError",
    "atomic_torch_save",
    "load_checkpoint",
    "load_supernet",
    "subnet_from_checkpoint",
]

logger = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "tamnas-supernet"
CHECKPOINT_VERSION = 1
MODEL_PREFIX = "supernet."


class CheckpointError(ValueError):
    """A checkpoint is missing, unreadable, or belongs to another space."""


def atomic_torch_save(obj: Any, path: str | os.PathLike) -> None:
    """``torch.save`` to a temporary file next to ``path``, fsync, then ``os.replace``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            torch.save(obj, f)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp creates 0600; give the usual permissions
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning checkpoint IO: atomic writes, ``weights_only=True`` reads."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: str | os.PathLike,
                        storage_options: Any | None = None) -> None:
        if storage_options is not None:
            raise TypeError("AtomicCheckpointIO does not take storage_options")
        atomic_torch_save(checkpoint, path)

    def load_checkpoint(self, path: str | os.PathLike, map_location: Any | None = None,
                        weights_only: bool | None = None) -> dict[str, Any]:
        return load_checkpoint(path, map_location=map_location)


def load_checkpoint(path: str | os.PathLike, map_location: Any | None = "cpu") -> dict[str, Any]:
    """Read a checkpoint with ``weights_only=True``; :class:`CheckpointError` if missing or unreadable."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: checkpoint not found")
    try:
        ckpt = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        lines = str(e).strip().splitlines()
        reason = "it needs unpickling, which is never done" if "Weights only load failed" in str(e) else \
            (lines[0][:200] if lines else "")
        raise CheckpointError(f"{path}: not a readable weights-only checkpoint ({type(e).__name__}: {reason})") from None
    if not isinstance(ckpt, dict):
        raise CheckpointError(f"{path}: expected a checkpoint dict, got {type(ckpt).__name__}")
    return ckpt


def _meta(ckpt: dict[str, Any], path: Path) -> dict[str, Any]:
    meta = ckpt.get("tamnas")
    if not isinstance(meta, dict) or meta.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: not a TAM-NAS supernet checkpoint (no 'tamnas' entry of format "
                              f"{CHECKPOINT_FORMAT!r})")
    if meta.get("version") != CHECKPOINT_VERSION:
        raise CheckpointError(f"{path}: unsupported supernet checkpoint version {meta.get('version')!r}")
    return meta


def checkpoint_space(ckpt: dict[str, Any], path: str | os.PathLike = "checkpoint") -> SpaceConfig:
    """The :class:`SpaceConfig` a checkpoint was trained in."""
    meta = _meta(ckpt, Path(path))
    try:
        return SpaceConfig.from_dict(meta.get("space"), f"{path}: tamnas.space")
    except ArchitectureError as e:
        raise CheckpointError(str(e)) from None


def check_space(found: SpaceConfig, expected: SpaceConfig | None, path: str | os.PathLike) -> None:
    """Refuse a checkpoint from another data set, width, shape or reading of Table I."""
    if expected is not None and found != expected:
        diffs = [f"{k}: checkpoint {v!r}, expected {want!r}" for k, v, want in found.differences(expected)]
        raise CheckpointError(f"{path}: supernet checkpoint belongs to another space ({'; '.join(diffs)})")


def weights_misfit(expected: dict[str, Any], weights: dict[str, Any]) -> str:
    """One line on how ``weights`` differ from a model's ``expected`` state dict ('' if they fit):
    counts of mismatched, missing and unexpected tensors and the first of each (not torch's
    one line per tensor)."""
    wrong = [k for k in expected if k in weights and tuple(getattr(weights[k], "shape", ())) != tuple(expected[k].shape)]
    missing = [k for k in expected if k not in weights]
    unexpected = [k for k in weights if k not in expected]
    parts = []
    if wrong:
        k = wrong[0]
        parts.append(f"{len(wrong)} of {len(expected)} tensors have another shape, the first {k}: "
                     f"checkpoint {list(weights[k].shape)}, model {list(expected[k].shape)}")
    if missing:
        parts.append(f"{len(missing)} missing (the first {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected (the first {unexpected[0]})")
    return "; ".join(parts)


def load_supernet(checkpoint_path: str | os.PathLike, expected_space: SpaceConfig | None = None,
                  *, map_location: Any = "cpu") -> tuple[TamNasSpace, SpaceConfig, dict[str, Any]]:
    """Rebuild the one-shot supernet of a checkpoint with its trained weights.

    Parameters
    ----------
    checkpoint_path : path
        A checkpoint written by supernet training (``.../checkpoints/last.ckpt``).
    expected_space : SpaceConfig, optional
        If given, a checkpoint of another data set, width or shape is refused.

    Returns
    -------
    supernet : TamNasSpace
        ``to_one_shot(TamNasSpace(...))`` with the weights loaded, in eval mode, with the
        checkpoint's current architecture active (if it had one).
    space : SpaceConfig
    meta : dict
        The checkpoint's ``tamnas`` entry plus ``epoch`` and ``global_step``.
    """
    path = Path(checkpoint_path)
    ckpt = load_checkpoint(path, map_location=map_location)
    space = checkpoint_space(ckpt, path)
    check_space(space, expected_space, path)
    state = ckpt.get("state_dict")
    if not isinstance(state, dict):
        raise CheckpointError(f"{path}: no state_dict")
    weights = {k[len(MODEL_PREFIX):]: v for k, v in state.items() if k.startswith(MODEL_PREFIX)}
    supernet = to_one_shot(TamNasSpace(dataset=space.dataset, width_multiplier=space.width_multiplier,
                                       reading=space.reading))
    misfit = weights_misfit(supernet.state_dict(), weights)
    if misfit:
        raise CheckpointError(f"{path}: weights do not fit the {space.dataset} width-{space.width_multiplier} "
                              f"supernet (reading {space.reading}; {misfit})")
    supernet.load_state_dict(weights)
    meta = dict(_meta(ckpt, path))
    meta["epoch"] = ckpt.get("epoch")
    meta["global_step"] = ckpt.get("global_step")
    if meta.get("architecture"):
        activate(supernet, Architecture.from_genes(meta["architecture"]))
    return supernet.eval(), space, meta


def subnet_from_checkpoint(checkpoint_path: str | os.PathLike, arch: Architecture,
                           expected_space: SpaceConfig | None = None) -> Subnet:
    """A standalone :class:`Subnet` for ``arch`` with the checkpoint's supernet weights (eval mode).

    BN statistics are the supernet's; use :func:`trainers.bn.recalibrate_bn` before evaluating.
    """
    supernet, _, _ = load_supernet(checkpoint_path, expected_space)
    activate(supernet, arch)
    return inherit_subnet(supernet, arch).eval()
