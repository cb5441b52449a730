"""One subnet of the TAM-NAS space, :class:`Architecture`, and every representation of it.

Pure Python plus numpy (no torch). An architecture is 16 layers, each a ``(block id, channel
ratio)`` pair (:mod:`search_space.space`); :class:`Architecture` validates it on construction
and owns every conversion:

- genes: ``((block id, ratio id), ...)``, 16 pairs: :attr:`~Architecture.genes`,
  :meth:`~Architecture.from_genes`;
- genome: the genes as an int64 array of shape ``(16, 2)``, what the NSGA-II operators work on:
  :attr:`~Architecture.genome`, :meth:`~Architecture.from_genome`;
- key: ``"b:r-b:r-..."`` (ratio ids), for deduplication, state files and fronts:
  :attr:`~Architecture.key`, :meth:`~Architecture.from_key`, :meth:`~Architecture.key_of` (of genes
  or a genome, without validation);
- NNI sample: ``{"layer_i": block id, "ratio_i": ratio}``: :meth:`~Architecture.to_sample`,
  :meth:`~Architecture.from_sample`;
- JSON dict: ``{"format": "tamnas-architecture", ...}``: :meth:`~Architecture.to_dict`,
  :meth:`~Architecture.from_dict` (files: :mod:`search_space.files`).

See docs/architecture.md §4 for the JSON format.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .space import (
    BLOCKS,
    NUM_BLOCKS,
    NUM_LAYERS,
    RATIOS,
    STRIDE2_LAYERS,
    ArchitectureError,
    SpaceConfig,
    allowed_blocks,
    ratio_index,
)

ARCH_FORMAT = "tamnas-architecture"
FORMAT_VERSION = 1
LAYER_FIELDS = frozenset({"block", "ratio", "name"})
_ARCH_FIELDS = frozenset({"format", "version", "space", "layers", "objectives", "provenance"})


@dataclass(frozen=True)
class Objective:
    """One search objective: a key of a trial's metric dict and whether it is maximised."""

    name: str
    direction: str  # "max" | "min"

    def __post_init__(self) -> None:
        if self.direction not in ("max", "min"):
            raise ArchitectureError(f"objective {self.name!r}: direction must be 'max' or 'min', "
                                    f"got {self.direction!r}")


DEFAULT_OBJECTIVES = (Objective("adv_acc", "max"), Objective("clean_acc", "max"), Objective("params", "min"))


@dataclass(frozen=True)
class Architecture:
    """One subnet: 16 ``(block id, ratio)`` layers, validated on construction."""

    blocks: tuple[int, ...]
    ratios: tuple[float, ...]
    objectives: dict[str, float] = field(default_factory=dict, compare=False, hash=False)
    provenance: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        blocks = tuple(self.blocks)
        ratios = tuple(self.ratios)
        if len(blocks) != NUM_LAYERS or len(ratios) != NUM_LAYERS:
            raise ArchitectureError(f"layers: expected {NUM_LAYERS} layers, got "
                                    f"{len(blocks)} blocks and {len(ratios)} ratios")
        norm_ratios = [_check_layer(i, b, r, f"layers[{i}].block", f"layers[{i}].ratio")
                       for i, (b, r) in enumerate(zip(blocks, ratios, strict=True))]
        object.__setattr__(self, "blocks", blocks)
        object.__setattr__(self, "ratios", tuple(norm_ratios))

    def with_info(self, objectives: Mapping[str, float] | None = None,
                  provenance: Mapping[str, Any] | None = None) -> Architecture:
        """The same layers with these objectives and provenance."""
        return Architecture(self.blocks, self.ratios, dict(objectives or {}), dict(provenance or {}))

    # ---- genes: (block id, ratio id) per layer
    @property
    def genes(self) -> tuple[tuple[int, int], ...]:
        return tuple((b, ratio_index(r)) for b, r in zip(self.blocks, self.ratios, strict=True))

    @classmethod
    def from_genes(cls, genes: Iterable[Sequence[int]]) -> Architecture:
        genes = [tuple(g) for g in genes]
        for i, g in enumerate(genes):
            if len(g) != 2 or not 0 <= int(g[1]) < len(RATIOS):
                raise ArchitectureError(f"layers[{i}]: bad gene {g!r}")
        return cls(tuple(int(b) for b, _ in genes), tuple(RATIOS[int(r)] for _, r in genes))

    # ---- genome: the genes as the int64 array (16, 2) the NSGA-II operators work on
    @property
    def genome(self) -> np.ndarray:
        """Column 0 the block id (Table XIV), column 1 the ratio id (Table XV); a fresh array."""
        return np.asarray(self.genes, dtype=np.int64)

    @classmethod
    def from_genome(cls, genome: np.ndarray) -> Architecture:
        return cls.from_genes(np.asarray(genome).tolist())

    # ---- key
    @property
    def key(self) -> str:
        """Canonical string key (used to deduplicate and to persist tuner state)."""
        return self.key_of(self.genes)

    @staticmethod
    def key_of(genes: Iterable[Sequence[int]]) -> str:
        """The :attr:`key` of genes or a genome, without building (or validating) the architecture."""
        return "-".join(f"{int(b)}:{int(r)}" for b, r in genes)

    @classmethod
    def from_key(cls, key: str) -> Architecture:
        """Inverse of :attr:`key` (``"b:r-b:r-..."``, ratio ids)."""
        try:
            genes = [tuple(int(v) for v in part.split(":")) for part in str(key).split("-")]
        except ValueError:
            raise ArchitectureError(f"architecture key {key!r} is not 'block:ratio_id-...'") from None
        if len(genes) != NUM_LAYERS or any(len(g) != 2 for g in genes):
            raise ArchitectureError(f"architecture key {key!r} must have {NUM_LAYERS} 'block:ratio_id' parts")
        return cls.from_genes(genes)

    # ---- NNI sample
    def to_sample(self) -> dict[str, Any]:
        """The NNI sample ``{"layer_i": block_id, "ratio_i": ratio}``."""
        sample: dict[str, Any] = {}
        for i, (b, r) in enumerate(zip(self.blocks, self.ratios, strict=True)):
            sample[f"layer_{i}"] = b
            sample[f"ratio_{i}"] = r
        return sample

    @classmethod
    def from_sample(cls, sample: Mapping[str, Any], where: str = "sample") -> Architecture:
        """Parse an NNI sample; errors name the sample's own key (``sample.layer_4: 19 ...``)."""
        if not isinstance(sample, Mapping):
            raise ArchitectureError(f"{where}: expected an object {{'layer_i': block, 'ratio_i': ratio}}, "
                                    f"got {type(sample).__name__}")
        blocks, ratios = [], []
        for i in range(NUM_LAYERS):
            for key in (f"layer_{i}", f"ratio_{i}"):
                if key not in sample:
                    raise ArchitectureError(f"{where}: missing key {key!r}")
            b = _as_block_id(sample[f"layer_{i}"], f"{where}.layer_{i}")
            blocks.append(b)
            ratios.append(_check_layer(i, b, sample[f"ratio_{i}"], f"{where}.layer_{i}", f"{where}.ratio_{i}"))
        extra = set(sample) - {f"{p}_{i}" for p in ("layer", "ratio") for i in range(NUM_LAYERS)}
        if extra:
            raise ArchitectureError(f"{where}: unknown key(s) {sorted(extra, key=str)}")
        return cls(tuple(blocks), tuple(ratios))

    # ---- JSON
    def to_dict(self, space: SpaceConfig | None = None) -> dict[str, Any]:
        d: dict[str, Any] = {"format": ARCH_FORMAT, "version": FORMAT_VERSION}
        if space is not None:
            d["space"] = space.to_dict()
        d["layers"] = [{"block": b, "ratio": r, "name": BLOCKS[b].short}
                       for b, r in zip(self.blocks, self.ratios, strict=True)]
        if self.objectives:
            d["objectives"] = dict(self.objectives)
        if self.provenance:
            d["provenance"] = dict(self.provenance)
        return d

    @classmethod
    def from_dict(cls, d: Any, where: str = "architecture",
                  space: SpaceConfig | None = None) -> Architecture:
        """Parse and validate; if ``space`` is given, the file's space must match it."""
        if not isinstance(d, Mapping):
            raise ArchitectureError(f"{where}: expected a JSON object, got {type(d).__name__}")
        if d.get("format") != ARCH_FORMAT:
            raise ArchitectureError(f"{where}.format: expected {ARCH_FORMAT!r}, got {d.get('format')!r}")
        check_version(d, where)
        unknown = set(d) - _ARCH_FIELDS
        if unknown:
            raise ArchitectureError(f"{where}: unknown field(s) {sorted(unknown)}")
        _check_space(d, where, space)
        blocks, ratios = _parse_layers(d.get("layers"), where)
        objectives = _parse_objective_values(d.get("objectives", {}), where)
        provenance = d.get("provenance", {})
        if not isinstance(provenance, Mapping):
            raise ArchitectureError(f"{where}.provenance: expected an object, got {provenance!r}")
        try:
            return cls(tuple(blocks), tuple(ratios), objectives, dict(provenance))
        except ArchitectureError as e:
            raise ArchitectureError(f"{where}.{e}") from None

    def describe(self) -> str:
        return ", ".join(f"{i}:{BLOCKS[b].short}x{r}" for i, (b, r) in enumerate(
            zip(self.blocks, self.ratios, strict=True)))


# --------------------------------------------------------------------------- validation
def _as_block_id(v: Any, where: str) -> int:
    if isinstance(v, bool):
        raise ArchitectureError(f"{where}: {v!r} is not a block id")
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int):
        raise ArchitectureError(f"{where}: {v!r} is not a block id 0..{NUM_BLOCKS - 1}")
    return v


def _check_layer(i: int, b: Any, r: Any, block_where: str, ratio_where: str) -> float:
    """Validate layer ``i``'s block id (range, stride-2 rule) and ratio; return the Table XV ratio."""
    if isinstance(b, bool) or not isinstance(b, int) or not 0 <= b < NUM_BLOCKS:
        raise ArchitectureError(f"{block_where}: {b!r} is not a block id 0..{NUM_BLOCKS - 1}")
    if b not in allowed_blocks(i):
        raise ArchitectureError(
            f"{block_where}: {b} ({BLOCKS[b].short}) is a pure robust block, not allowed in "
            f"stride-2 layer {i} (stride-2 layers: {list(STRIDE2_LAYERS)})")
    if isinstance(r, bool) or not isinstance(r, (int, float)):
        raise ArchitectureError(f"{ratio_where}: {r!r} is not a number")
    try:
        return RATIOS[ratio_index(r)]
    except ArchitectureError as e:
        raise ArchitectureError(f"{ratio_where}: {e}") from None


def check_version(d: Mapping, where: str) -> None:
    """``version`` must be the integer this tool reads (``true`` is not 1, and neither is ``1.0``)."""
    v = d.get("version")
    if isinstance(v, bool) or not isinstance(v, int) or v != FORMAT_VERSION:
        raise ArchitectureError(f"{where}.version: unsupported version {v!r} (this tool reads {FORMAT_VERSION})")


def _check_space(d: Mapping, where: str, space: SpaceConfig | None) -> None:
    """The file's ``space`` is valid and, if ``space`` is given, present and equal to it."""
    if space is not None:
        if "space" not in d:
            raise ArchitectureError(f"{where}.space: missing (expected {space.to_dict()})")
        file_space = SpaceConfig.from_dict(d["space"], f"{where}.space")
        if file_space != space:
            raise ArchitectureError(f"{where}.space: architecture belongs to {file_space.to_dict()}, "
                                    f"not to {space.to_dict()}")
    elif "space" in d:
        SpaceConfig.from_dict(d["space"], f"{where}.space")


def _parse_layers(layers: Any, where: str) -> tuple[list[int], list[float]]:
    if not isinstance(layers, list):
        raise ArchitectureError(f"{where}.layers: expected a list of {NUM_LAYERS} objects")
    if len(layers) != NUM_LAYERS:
        raise ArchitectureError(f"{where}.layers: expected {NUM_LAYERS} layers, got {len(layers)}")
    blocks, ratios = [], []
    for i, layer in enumerate(layers):
        lw = f"{where}.layers[{i}]"
        if not isinstance(layer, Mapping) or "block" not in layer or "ratio" not in layer:
            raise ArchitectureError(f"{lw}: expected {{'block': id, 'ratio': r}}, got {layer!r}")
        unknown = set(layer) - LAYER_FIELDS
        if unknown:
            raise ArchitectureError(f"{lw}: unknown field(s) {sorted(unknown, key=str)} "
                                    f"(a layer holds {sorted(LAYER_FIELDS)})")
        b = _as_block_id(layer["block"], f"{lw}.block")
        blocks.append(b)
        ratios.append(_check_layer(i, b, layer["ratio"], f"{lw}.block", f"{lw}.ratio"))
        # the name only rides along for readability, but a wrong one means the file was edited
        # inconsistently: which of the two did the author mean?
        if "name" in layer and layer["name"] != BLOCKS[b].short:
            raise ArchitectureError(f"{lw}.name: {layer['name']!r} does not match block {b} "
                                    f"(expected {BLOCKS[b].short!r})")
    return blocks, ratios


def _parse_objective_values(objectives: Any, where: str) -> dict[str, float]:
    if not isinstance(objectives, Mapping):
        raise ArchitectureError(f"{where}.objectives: expected an object of numbers, got {objectives!r}")
    for k, v in objectives.items():
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ArchitectureError(f"{where}.objectives.{k}: {v!r} is not a number")
        if not math.isfinite(v):
            raise ArchitectureError(f"{where}.objectives.{k}: {v!r} is not a finite number")
    return dict(objectives)
