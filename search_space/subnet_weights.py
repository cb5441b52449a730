"""Read a supernet's search export (trainers/export_search.py) into standalone subnets: torch only.

A trial opens ``manifest.json``, ``stem_head.pt`` and the 16 block shards its architecture
chooses, builds a plain :class:`~search_space.subnet.Subnet` and fills every tensor with the
*leading slice* of the full-width supernet tensor -- the weights NNI's mixed ops hand to
:func:`search_space.oneshot.inherit_subnet` (equal tensors, tested), without ``nni.nas``, the
one-shot rebuild or the checkpoint's optimizer state (docs/architecture.md §13).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from .architecture import Architecture
from .space import ArchitectureError, SpaceConfig
from .subnet import Subnet

__all__ = ["EXPORT_DIR", "ExportError", "SearchExport", "TrialDataKey", "export_dir_for", "export_is_current"]

EXPORT_FORMAT = "tamnas-search-export"
EXPORT_VERSION = 1
EXPORT_DIR = "search"
MANIFEST = "manifest.json"


class ExportError(ArchitectureError):
    """A search export is missing, stale, unreadable or does not fit; the message names the file."""


def block_file(layer: int, block: int) -> str:
    return f"blocks/l{layer:02d}_b{block:02d}.pt"


def export_dir_for(checkpoint: str | os.PathLike) -> Path:
    """``RUN/search`` for ``RUN/checkpoints/NAME.ckpt`` (beside the run's ``supernet.json``)."""
    ckpt = Path(checkpoint)
    run_dir = ckpt.parent.parent if ckpt.parent.name == "checkpoints" else ckpt.parent
    return run_dir / EXPORT_DIR if ckpt.name == "last.ckpt" else run_dir / f"{EXPORT_DIR}.{ckpt.stem}"


def checkpoint_stamp(checkpoint: str | os.PathLike) -> dict[str, int]:
    """Size and modification time of a checkpoint: cheap to compare on every trial (no hashing)."""
    st = Path(checkpoint).stat()
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns}


def _read_manifest(export: Path) -> dict[str, Any]:
    path = export / MANIFEST
    try:
        manifest = json.loads(path.read_text())
    except FileNotFoundError:
        raise ExportError(f"{export}: no search export ({MANIFEST} missing; write it with "
                          "python -m trainers export-search CKPT)") from None
    except (OSError, ValueError) as e:
        raise ExportError(f"{path}: unreadable ({e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise ExportError(f"{path}.format: expected {EXPORT_FORMAT!r}")
    if manifest.get("version") != EXPORT_VERSION:
        raise ExportError(f"{path}.version: unsupported version {manifest.get('version')!r}")
    return manifest


def export_is_current(export: str | os.PathLike, checkpoint: str | os.PathLike) -> bool:
    """Whether ``export`` was written from ``checkpoint``'s current bytes (size and mtime)."""
    try:
        manifest = _read_manifest(Path(export))
        return {k: manifest["checkpoint"][k] for k in ("bytes", "mtime_ns")} == checkpoint_stamp(checkpoint)
    except (ExportError, OSError, KeyError, TypeError):
        return False


@dataclass(frozen=True)
class TrialDataKey:
    """What the cached trial images depend on: the data split and the evaluation sizes."""

    dataset: str
    val_size: int | float
    split_seed: int
    examples: int | None
    bn_batches: int
    batch_size: int
    seed: int

    def name(self) -> str:
        return (f"{self.dataset}-val{self.val_size}-split{self.split_seed}-n{self.examples or 'all'}"
                f"-bn{self.bn_batches}x{self.batch_size}-seed{self.seed}")


def trial_data_file(key: TrialDataKey) -> str:
    return f"trial_data/{key.name()}.pt"


def _load(path: Path) -> dict[str, torch.Tensor]:
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise ExportError(f"{path}: missing from the search export") from None
    except Exception as e:  # torch raises UnpicklingError, RuntimeError, EOFError, ... for bad files
        raise ExportError(f"{path}: not a readable weights-only file ({type(e).__name__}: {e})") from None
    if not isinstance(data, dict):
        raise ExportError(f"{path}: expected a dict of tensors, got {type(data).__name__}")
    return data


def leading_slice(full: torch.Tensor, shape: torch.Size, name: str) -> torch.Tensor:
    """``full[:shape[0], :shape[1], ...]``: a subnet's share of a full-width supernet tensor."""
    if full.dim() != len(shape) or any(s > f for s, f in zip(shape, full.shape, strict=True)):
        raise ExportError(f"{name}: the subnet needs shape {tuple(shape)}, the export holds {tuple(full.shape)}")
    return full[tuple(slice(0, s) for s in shape)]


class SearchExport:
    """One supernet's search export, opened once; :meth:`subnet` builds subnets from it.

    ``cache=True`` keeps every shard read in memory (a long-lived evaluator); a one-shot trial
    reads each of its 17 files once either way. ``bytes_read`` counts the shard bytes read.
    """

    def __init__(self, path: str | os.PathLike, *, cache: bool = True) -> None:
        self.path = Path(path)
        self.manifest = _read_manifest(self.path)
        try:
            self.space = SpaceConfig.from_dict(self.manifest["space"], f"{self.path / MANIFEST}.space")
            self.epsilon = float(self.manifest["epsilon"])
            self.data: dict[str, Any] = dict(self.manifest["data"])
            self._files = {(int(b["layer"]), int(b["block"])): b["file"] for b in self.manifest["blocks"]}
        except (KeyError, TypeError, ValueError) as e:
            raise ExportError(f"{self.path / MANIFEST}: missing or bad field ({type(e).__name__}: {e})") from None
        self.cache = cache
        self._shards: dict[str, dict[str, torch.Tensor]] = {}
        self.bytes_read = 0

    @property
    def record_path(self) -> Path | None:
        return self.path / self.manifest["record"] if self.manifest.get("record") else None

    @property
    def checkpoint(self) -> Path:
        return self.path / self.manifest["checkpoint"]["file"]

    def _shard(self, file: str) -> dict[str, torch.Tensor]:
        if file in self._shards:
            return self._shards[file]
        path = self.path / file
        data = _load(path)
        self.bytes_read += path.stat().st_size
        if self.cache:
            self._shards[file] = data
        return data

    def subnet(self, arch: Architecture) -> Subnet:
        """A standalone subnet of ``arch`` holding its share of the supernet's weights (train mode, CPU)."""
        stem_head = self._shard("stem_head.pt")
        subnet = Subnet(arch, self.space, init=False)  # every tensor is loaded below
        state: dict[str, torch.Tensor] = {}
        blocks: dict[int, dict[str, torch.Tensor]] = {}
        for name, target in subnet.state_dict().items():
            parts = name.split(".")
            if parts[0] == "features":
                layer = int(parts[1])
                if layer not in blocks:
                    file = self._files.get((layer, arch.blocks[layer]))
                    if file is None:
                        raise ExportError(f"{self.path}: no shard for block {arch.blocks[layer]} of layer {layer}")
                    blocks[layer] = self._shard(file)
                key, source = ".".join(parts[2:]), blocks[layer]
            else:
                key, source = name, stem_head
            if key not in source:
                raise ExportError(f"{self.path}: {name} is missing from the export")
            full = source[key]
            state[name] = full if full.dim() == 0 else leading_slice(full, target.shape, name)
        subnet.load_state_dict(state, strict=True)
        return subnet

    def trial_data(self, key: TrialDataKey) -> dict[str, torch.Tensor] | None:
        """The cached images of ``key`` (``None`` if not cached): ``val_x``, ``val_y``, ``bn`` (a list)."""
        path = self.path / trial_data_file(key)
        if not path.is_file():
            return None
        data = _load(path)
        if data.get("key") != key.name():
            raise ExportError(f"{path}: holds images of {data.get('key')!r}, not of {key.name()!r}")
        self.bytes_read += path.stat().st_size

        def images(x: torch.Tensor) -> torch.Tensor:
            return x.to(torch.float32).div(255) if x.dtype == torch.uint8 else x

        n = sum(1 for k in data if k.startswith("bn_"))
        return {"val_x": images(data["val_x"]), "val_y": data["val_y"],
                "bn": [images(data[f"bn_{i}"]) for i in range(n)]}


def nonfinite_tensors(model: torch.nn.Module) -> list[str]:
    """Names of the floating-point parameters and buffers of ``model`` holding NaN or inf."""
    return [name for name, t in (*model.named_parameters(), *model.named_buffers())
            if t.is_floating_point() and not torch.isfinite(t).all()]
