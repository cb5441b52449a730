"""The supernet record: what one supernet run trained, in a small torch-free JSON file.

Supernet training writes ``<out>/supernet.json`` next to ``<out>/checkpoints/last.ckpt`` after
every epoch (and ``python -m trainers record CKPT`` writes it for an existing checkpoint). The
search takes it as its one source of the space (tuner classArg ``supernet: DIR_OR_RECORD``,
:mod:`strategies.record`) and the retrain checks it against its own space, so the supernet, the
search and the retrain cannot silently work in different spaces (docs/architecture.md §1, §6)::

    {"format": "tamnas-supernet-record", "version": 1,
     "space": {"dataset": "cifar10", "width_multiplier": 2, "in_channels": 3, "num_classes": 10,
               "resolution": 32},
     "input_shape": [3, 32, 32], "epsilon": 0.0314, "method": "trades",
     "seed": 0, "blocks": null, "epochs_trained": 1000, "global_step": 88000,
     "phases": [{"name": "block", "epochs": [0, 500], "trained_epochs": 500, "method": "trades",
                 "sample_ratios": false, "ratios": [1.0], "param_range": [1823000.0, 2375000.0]}, ...],
     "checkpoint": {"file": "checkpoints/last.ckpt", "sha256": "...", "bytes": 123456789},
     "data_root": "/abs/path/data"}

``space`` carries ``"reading"`` when the supernet was built with another reading of Table I than
``default`` (:class:`~search_space.space.SpaceConfig`); the search and the retrain take it from here.
``phases[i].ratios`` are the ratios phase ``i`` trained by ``epochs_trained`` (a joint phase
widens its set as it goes; an untrained phase has ``[]``); ``blocks`` is the sampler's block
subset (``null``: all 22). ``checkpoint.sha256`` is the SHA-256 of the checkpoint file's bytes
(what ``sha256sum`` prints), so the file can be verified without torch; ``checkpoint.file`` is
relative to the record's directory.

What the search derives (:meth:`SupernetRecord.search_space_args`): the space, the blocks, and the
ratios and parameter range of the *last phase the run trained* -- the distribution the
supernet's weights were last trained on. (For the shipped presets this is also the union of
what any phase trained: the joint phase's ratio set grows and contains the block phase's 1.0.)
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import numbers
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .files import atomic_write_text, read_json
from .space import RATIOS, ArchitectureError, SpaceConfig, block_subset, ratio_subset

RECORD_FORMAT = "tamnas-supernet-record"
RECORD_VERSION = 1
RECORD_FILE = "supernet.json"
CHECKPOINT_DIR = "checkpoints"

_FIELDS = ("format", "version", "space", "input_shape", "epsilon", "method", "seed", "blocks", "epochs_trained",
           "global_step", "phases", "checkpoint", "data_root")
_PHASE_FIELDS = ("name", "epochs", "trained_epochs", "method", "sample_ratios", "ratios", "param_range")


class RecordError(ArchitectureError):
    """A supernet record is missing or invalid; the message names the file and the field."""


def file_sha256(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 of a file's bytes (hex), read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def record_path(value: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> Path:
    """The record file a ``supernet`` value names: a supernet run directory (its ``supernet.json``)
    or the record file itself; a relative path is taken from ``base_dir`` (default: the working
    directory). A checkpoint file is refused with the record it would be next to."""
    path = Path(value)
    if not path.is_absolute() and base_dir is not None:
        path = Path(base_dir) / path
    if path.suffix == ".ckpt":
        raise RecordError(f"{value}: a checkpoint, not a supernet record; give the supernet run directory "
                          f"({record_beside_checkpoint(path).parent}) or its {RECORD_FILE}")
    return path / RECORD_FILE if path.is_dir() or not path.suffix else path


def record_beside_checkpoint(checkpoint: str | os.PathLike) -> Path:
    """Where the record of a checkpoint lives: ``<out>/supernet.json`` for ``<out>/checkpoints/*.ckpt``."""
    ckpt = Path(checkpoint)
    run_dir = ckpt.parent.parent if ckpt.parent.name == CHECKPOINT_DIR else ckpt.parent
    return run_dir / RECORD_FILE


@dataclass(frozen=True)
class PhaseRecord:
    """One sampler phase: its epochs ``[start, end)``, how many of them were trained, what it trained."""

    name: str
    epochs: tuple[int, int]
    trained_epochs: int
    method: str  # the phase's training method
    sample_ratios: bool
    ratios: tuple[float, ...]  # () if the phase was not reached
    param_range: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "epochs": list(self.epochs), "trained_epochs": self.trained_epochs,
                "method": self.method, "sample_ratios": self.sample_ratios, "ratios": list(self.ratios),
                "param_range": list(self.param_range)}

    @classmethod
    def from_dict(cls, d: Any, where: str) -> PhaseRecord:
        _check_fields(d, _PHASE_FIELDS, where)
        if not isinstance(d["name"], str):
            raise RecordError(f"{where}.name: expected a string, got {d['name']!r}")
        start, end = _pair(d["epochs"], f"{where}.epochs", integer=True)
        if not 0 <= start < end:
            raise RecordError(f"{where}.epochs: expected [start, end) with 0 <= start < end, got {d['epochs']!r}")
        trained = _integer(d["trained_epochs"], f"{where}.trained_epochs")
        if not isinstance(d["method"], str) or not d["method"]:
            raise RecordError(f"{where}.method: expected a method name, got {d['method']!r}")
        if not isinstance(d["sample_ratios"], bool):
            raise RecordError(f"{where}.sample_ratios: expected true or false, got {d['sample_ratios']!r}")
        lo, hi = _pair(d["param_range"], f"{where}.param_range")
        if not 0 <= lo <= hi:
            raise RecordError(f"{where}.param_range: expected [low, high] with 0 <= low <= high, got {[lo, hi]}")
        raw = d["ratios"]
        if isinstance(raw, list) and not raw:
            if trained:
                raise RecordError(f"{where}.ratios: empty, but the phase trained {trained} epoch(s)")
            ratios: tuple[float, ...] = ()
        else:
            if not trained:
                raise RecordError(f"{where}.ratios: {raw!r}, but the phase trained no epoch (expected [])")
            ratios = _wrap(ratio_subset, raw, f"{where}.ratios")
        return cls(d["name"], (start, end), trained, d["method"], d["sample_ratios"], ratios, (lo, hi))


@dataclass(frozen=True)
class SupernetRecord:
    """A validated supernet record; :meth:`load` reads one, :meth:`save` writes one (atomically, 0644)."""

    space: SpaceConfig
    epsilon: float
    method: str
    seed: int
    blocks: tuple[int, ...] | None
    epochs_trained: int
    global_step: int
    phases: tuple[PhaseRecord, ...]
    checkpoint_file: str
    checkpoint_sha256: str
    checkpoint_bytes: int
    data_root: str
    path: Path | None = field(default=None, compare=False)  # the file it was read from or written to

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.space.in_channels, self.space.resolution, self.space.resolution)

    @property
    def checkpoint_path(self) -> Path:
        """The checkpoint, resolved from the record's directory."""
        base = self.path.parent if self.path is not None else Path(".")
        return base / self.checkpoint_file

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": RECORD_FORMAT, "version": RECORD_VERSION, "space": self.space.to_dict(),
            "input_shape": list(self.input_shape), "epsilon": self.epsilon, "method": self.method,
            "seed": self.seed, "blocks": None if self.blocks is None else list(self.blocks),
            "epochs_trained": self.epochs_trained, "global_step": self.global_step,
            "phases": [p.to_dict() for p in self.phases],
            "checkpoint": {"file": self.checkpoint_file, "sha256": self.checkpoint_sha256,
                           "bytes": self.checkpoint_bytes},
            "data_root": self.data_root,
        }

    def save(self, path: str | os.PathLike) -> SupernetRecord:
        """Write the record to ``path`` (atomic, the umask's usual mode); returns it with ``path`` set."""
        atomic_write_text(path, json.dumps(self.to_dict(), indent=2) + "\n")
        return dataclasses.replace(self, path=Path(path))

    @classmethod
    def load(cls, value: str | os.PathLike, base_dir: str | os.PathLike | None = None) -> SupernetRecord:
        """Read and validate a record (a file, or a supernet run directory holding ``supernet.json``)."""
        path = record_path(value, base_dir)
        if not path.is_file():
            raise RecordError(f"{path}: supernet record not found (supernet training writes it next to "
                              "checkpoints/; for an older checkpoint: python -m trainers record CKPT)")
        return cls.from_dict(read_json(path, RecordError), where=str(path), path=path)

    @classmethod
    def from_dict(cls, d: Any, where: str = "record", path: Path | None = None) -> SupernetRecord:
        if not isinstance(d, Mapping) or d.get("format") != RECORD_FORMAT:
            got = d.get("format") if isinstance(d, Mapping) else type(d).__name__
            raise RecordError(f"{where}.format: expected {RECORD_FORMAT!r}, got {got!r}")
        _check_fields(d, _FIELDS, where)
        if isinstance(d["version"], bool) or d["version"] != RECORD_VERSION:
            raise RecordError(f"{where}.version: unsupported version {d['version']!r} (this tool reads "
                              f"{RECORD_VERSION})")
        space = _wrap(SpaceConfig.from_dict, d["space"], f"{where}.space")
        shape = [space.in_channels, space.resolution, space.resolution]
        if d["input_shape"] != shape:
            raise RecordError(f"{where}.input_shape: {d['input_shape']!r} does not match the space (expected {shape})")
        epsilon = d["epsilon"]
        if isinstance(epsilon, bool) or not isinstance(epsilon, numbers.Real) or not epsilon >= 0:
            raise RecordError(f"{where}.epsilon: expected a number >= 0, got {epsilon!r}")
        if not isinstance(d["method"], str) or not d["method"]:
            raise RecordError(f"{where}.method: expected a method name, got {d['method']!r}")
        blocks = _wrap(block_subset, d["blocks"], f"{where}.blocks")
        if not isinstance(d["phases"], list) or not d["phases"]:
            raise RecordError(f"{where}.phases: expected a non-empty list, got {d['phases']!r}")
        phases = tuple(PhaseRecord.from_dict(p, f"{where}.phases[{i}]") for i, p in enumerate(d["phases"]))
        _check_phases(phases, f"{where}.phases")
        epochs = _integer(d["epochs_trained"], f"{where}.epochs_trained")
        if epochs != sum(p.trained_epochs for p in phases):
            raise RecordError(f"{where}.epochs_trained: {epochs}, but the phases trained "
                              f"{sum(p.trained_epochs for p in phases)} epochs")
        ckpt = d["checkpoint"]
        _check_fields(ckpt, ("file", "sha256", "bytes"), f"{where}.checkpoint")
        if not isinstance(ckpt["file"], str) or not ckpt["file"]:
            raise RecordError(f"{where}.checkpoint.file: expected a path relative to the record, got {ckpt['file']!r}")
        sha = ckpt["sha256"]
        if not isinstance(sha, str) or len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha):
            raise RecordError(f"{where}.checkpoint.sha256: expected 64 lower-case hex digits, got {sha!r}")
        if not isinstance(d["data_root"], str) or not os.path.isabs(d["data_root"]):
            raise RecordError(f"{where}.data_root: expected an absolute path, got {d['data_root']!r}")
        return cls(space, float(epsilon), d["method"], _integer(d["seed"], f"{where}.seed"), blocks, epochs,
                   _integer(d["global_step"], f"{where}.global_step"), phases, ckpt["file"], sha,
                   _integer(ckpt["bytes"], f"{where}.checkpoint.bytes"), d["data_root"], path)

    # ------------------------------------------------------------------ what the search derives
    @property
    def where(self) -> str:
        return str(self.path) if self.path is not None else "the supernet record"

    def search_phase(self) -> PhaseRecord:
        """The last phase the run trained (:class:`RecordError` if it trained none)."""
        trained = [p for p in self.phases if p.trained_epochs]
        if not trained:
            raise RecordError(f"{self.where}.phases: no phase trained an epoch; nothing to search")
        return trained[-1]

    def search_space_args(self) -> dict[str, Any]:
        """The tuner classArgs this supernet implies: space (reading included), blocks, ratios, ``param_range``,
        ``hv_bounds``.

        ``blocks``/``ratios`` are ``None`` where the supernet trained all of them.
        """
        phase = self.search_phase()
        ratios = None if set(phase.ratios) == set(RATIOS) else list(phase.ratios)
        return {"dataset": self.space.dataset, "width_multiplier": self.space.width_multiplier,
                "reading": self.space.reading,
                "blocks": None if self.blocks is None else list(self.blocks), "ratios": ratios,
                "param_range": list(phase.param_range), "hv_bounds": {"params": list(phase.param_range)}}

    def check_space(self, space: SpaceConfig, what: str) -> None:
        """:class:`RecordError` in one line if ``space`` (``what``'s) is not the space this supernet trained."""
        if space != self.space:
            diffs = "; ".join(f"{k}: {what} {v!r}, supernet {mine!r}" for k, v, mine in space.differences(self.space))
            raise RecordError(f"{self.where}: the supernet was trained in another space than {what} ({diffs})")


# --------------------------------------------------------------------------- validation helpers
def _check_fields(d: Any, names: Sequence[str], where: str) -> None:
    if not isinstance(d, Mapping):
        raise RecordError(f"{where}: expected an object, got {type(d).__name__}")
    missing = [k for k in names if k not in d]
    if missing:
        raise RecordError(f"{where}.{missing[0]}: missing")
    unknown = sorted(set(d) - set(names), key=str)
    if unknown:
        raise RecordError(f"{where}: unknown field(s) {unknown}")


def _wrap(parse: Any, value: Any, where: str) -> Any:
    """``parse(value, where)`` with its error as a :class:`RecordError` naming ``where``."""
    try:
        return parse(value, where)
    except ArchitectureError as e:
        raise RecordError(str(e)) from None


def _integer(v: Any, where: str) -> int:
    if isinstance(v, bool) or not isinstance(v, int) or v < 0:
        raise RecordError(f"{where}: expected a non-negative integer, got {v!r}")
    return v


def _pair(v: Any, where: str, integer: bool = False) -> tuple:
    kind = int if integer else numbers.Real
    if (not isinstance(v, list) or len(v) != 2
            or not all(isinstance(x, kind) and not isinstance(x, bool) for x in v)):
        raise RecordError(f"{where}: expected [low, high] ({'integers' if integer else 'numbers'}), got {v!r}")
    return tuple(v) if integer else (float(v[0]), float(v[1]))


def _check_phases(phases: Sequence[PhaseRecord], where: str) -> None:
    """Phases follow each other; a phase trained only if the one before it finished; only the last
    phase may train past its end (epochs past the end stay in the last phase)."""
    start = 0
    for i, p in enumerate(phases):
        length = p.epochs[1] - p.epochs[0]
        if p.epochs[0] != start:
            raise RecordError(f"{where}[{i}].epochs: starts at {p.epochs[0]}, but the phase before ends at {start}")
        if p.trained_epochs > length and i < len(phases) - 1:
            raise RecordError(f"{where}[{i}].trained_epochs: {p.trained_epochs} exceeds the phase's {length} epochs")
        if i and p.trained_epochs and phases[i - 1].trained_epochs < phases[i - 1].epochs[1] - phases[i - 1].epochs[0]:
            raise RecordError(f"{where}[{i}].trained_epochs: {p.trained_epochs}, but phase {i - 1} did not finish")
        start = p.epochs[1]
