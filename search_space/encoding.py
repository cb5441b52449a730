"""The TAM-NAS architecture encoding (paper Tables I, XIV, XV) and its JSON exchange format.

Pure Python (no torch): the search strategies import this module, and so does anything
that reads an architecture file.

An architecture is 16 layers, each a ``(block id, channel ratio)`` pair:

- block ids 0-21 follow Table XIV (see :data:`BLOCKS`);
- ratios are the ten channel-selector ratios of Table XV, 0.2 ... 2.0 (ids 0-9);
- layers 0, 4 and 12 have stride 2, where the shape-preserving pure robust blocks
  (18-21) are not candidates.

In an NNI sample the same architecture is ``{"layer_i": block_id, "ratio_i": ratio}``.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import tempfile
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

NUM_LAYERS = 16
STAGE_REPEATS = (4, 8, 4)
STAGE_CHANNELS = (48, 96, 192)
STRIDE2_LAYERS = (0, 4, 12)
RATIOS: tuple[float, ...] = tuple(round(0.2 * (i + 1), 1) for i in range(10))
DEFAULT_RATIO = 1.0
WIDTH_MULTIPLIERS = (1, 2, 4, 8)

ARCH_FORMAT = "tamnas-architecture"
FRONT_FORMAT = "tamnas-front"
FORMAT_VERSION = 1


class ArchitectureError(ValueError):
    """An architecture (or front file) is invalid; the message names the field and value."""


@dataclass(frozen=True)
class BlockSpec:
    """One row of Table XIV."""

    id: int
    family: str  # "shufflenetv2" | "shuffle_xception" | "pure_robust"
    kernel: int | None  # depthwise kernel of the ShuffleNet families
    non_local: str | None  # None | "embedded_gaussian" | "gaussian"
    se: bool = True
    bn: bool = True  # batch norm after the non-local output projection (pure robust blocks)

    @property
    def short(self) -> str:
        """Short name in the paper's abbreviations (S, SX, NE, NG, BN, K)."""
        nl = {"embedded_gaussian": "NE", "gaussian": "NG", None: ""}[self.non_local]
        if self.family == "pure_robust":
            return f"{nl}+SE" + ("+BN" if self.bn else "")
        base = "S" if self.family == "shufflenetv2" else "SX"
        return f"{base}{'+' + nl if nl else ''}-k{self.kernel}"

    @property
    def name(self) -> str:
        nl = {"embedded_gaussian": " + non-local (embedded Gaussian)",
              "gaussian": " + non-local (Gaussian)", None: ""}[self.non_local]
        if self.family == "pure_robust":
            return f"pure robust: non-local ({self.non_local.replace('_', ' ')}) + SE" + (
                " + BN" if self.bn else " (no BN)")
        fam = "ShuffleNetV2" if self.family == "shufflenetv2" else "Shuffle-Xception"
        return f"{fam} {self.kernel}x{self.kernel} + SE{nl}"

    @property
    def is_pure_robust(self) -> bool:
        return self.family == "pure_robust"


def _build_blocks() -> tuple[BlockSpec, ...]:
    blocks: list[BlockSpec] = []
    # Ids 0-17: (attention variant) x (family) x (kernel 3, 5, 7), in Table XIV order.
    for non_local in (None, "embedded_gaussian", "gaussian"):
        for family in ("shufflenetv2", "shuffle_xception"):
            for kernel in (3, 5, 7):
                blocks.append(BlockSpec(len(blocks), family, kernel, non_local))
    for non_local in ("embedded_gaussian", "gaussian"):
        for bn in (True, False):
            blocks.append(BlockSpec(len(blocks), "pure_robust", None, non_local, bn=bn))
    return tuple(blocks)


BLOCKS: tuple[BlockSpec, ...] = _build_blocks()
NUM_BLOCKS = len(BLOCKS)
PURE_ROBUST_BLOCKS = tuple(b.id for b in BLOCKS if b.is_pure_robust)


def layer_stride(layer: int) -> int:
    return 2 if layer in STRIDE2_LAYERS else 1


def allowed_blocks(layer: int) -> tuple[int, ...]:
    """Block ids that are candidates in ``layer`` (no pure robust block at stride 2)."""
    if layer in STRIDE2_LAYERS:
        return tuple(b.id for b in BLOCKS if not b.is_pure_robust)
    return tuple(b.id for b in BLOCKS)


def layer_channels(layer: int, width_multiplier: int = 1) -> tuple[int, int]:
    """(input, output) channels of choice layer ``layer`` (Table I; stem has 24 channels)."""
    c_in = 24
    i = 0
    for stage, repeat in enumerate(STAGE_REPEATS):
        c_out = STAGE_CHANNELS[stage] * width_multiplier
        for _ in range(repeat):
            if i == layer:
                return c_in, c_out
            c_in = c_out
            i += 1
    raise ArchitectureError(f"layer index {layer} out of range 0..{NUM_LAYERS - 1}")


def ratio_index(ratio: float) -> int:
    """Table XV id (0-9) of a channel ratio; accepts ints (NNI sends 1.0 as 1)."""
    for i, r in enumerate(RATIOS):
        if math.isclose(float(ratio), r, abs_tol=1e-6):
            return i
    raise ArchitectureError(f"ratio {ratio!r} is not one of {list(RATIOS)}")


# --------------------------------------------------------------------------- candidate subsets
# A quick supernet trains only some blocks and ratios; the sampler and the search must then
# use the same subset. Both read it through these functions.
def _subset(value: Any, field: str, parse: Any, what: str) -> tuple | None:
    """A non-empty list of distinct encoding values as a sorted tuple; ``None`` (all) stays ``None``."""
    if value is None:
        return None
    if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, Iterable):
        raise ArchitectureError(f"{field}: expected a list of {what}, got {value!r}")
    items = list(value)
    if not items:
        raise ArchitectureError(f"{field}: empty list; give at least one of {what} (or null for all)")
    out = [parse(v, items) for v in items]
    dup = sorted({v for v in out if out.count(v) > 1})
    if dup:
        raise ArchitectureError(f"{field}: duplicate value(s) {dup} in {items!r}")
    return tuple(sorted(out))


def candidate_blocks(layer: int, blocks: Iterable[int] | None = None) -> tuple[int, ...]:
    """Candidate blocks of ``layer``: its allowed blocks (stride-2 rule), restricted to ``blocks`` if given."""
    allowed = allowed_blocks(layer)
    if blocks is None:
        return allowed
    subset = set(blocks)
    return tuple(b for b in allowed if b in subset)


def block_subset(value: Any, field: str = "blocks") -> tuple[int, ...] | None:
    """Validate a block-id subset (Table XIV ids; ``None``: all 22); every layer must keep a candidate."""
    def parse(b: Any, items: list) -> int:
        # numpy integers are Integral; bools are ints to Python but never block ids
        if isinstance(b, bool) or not isinstance(b, numbers.Integral) or not 0 <= int(b) < NUM_BLOCKS:
            raise ArchitectureError(f"{field}: {b!r} in {items!r} is not a block id 0..{NUM_BLOCKS - 1} (Table XIV)")
        return int(b)

    blocks = _subset(value, field, parse, f"block ids 0..{NUM_BLOCKS - 1}")
    if blocks is not None:
        for i in range(NUM_LAYERS):
            if not candidate_blocks(i, blocks):
                raise ArchitectureError(f"{field}: {list(blocks)} leaves no candidate for stride-2 layer {i} "
                                        "(pure robust blocks are not allowed there)")
    return blocks


def ratio_subset(value: Any, field: str = "ratios") -> tuple[float, ...] | None:
    """Validate a channel-ratio subset (Table XV values; ``None``: all ten); ints are accepted (NNI sends 1.0 as 1)."""
    def parse(r: Any, items: list) -> float:
        if not isinstance(r, bool) and isinstance(r, numbers.Real):
            for x in RATIOS:
                if math.isclose(float(r), x, abs_tol=1e-6):
                    return x
        raise ArchitectureError(f"{field}: {r!r} in {items!r} is not one of {list(RATIOS)} (Table XV)")

    return _subset(value, field, parse, f"ratios from {list(RATIOS)}")


# --------------------------------------------------------------------------- data sets
@dataclass(frozen=True)
class SpaceConfig:
    """What an architecture was searched for: the supernet it belongs to."""

    dataset: str = "fashion_mnist"
    width_multiplier: int = 1
    in_channels: int = 1
    num_classes: int = 10
    resolution: int = 32

    def to_dict(self) -> dict[str, Any]:
        return {"dataset": self.dataset, "width_multiplier": self.width_multiplier,
                "in_channels": self.in_channels, "num_classes": self.num_classes,
                "resolution": self.resolution}

    @classmethod
    def for_dataset(cls, dataset: str, width_multiplier: int = 1) -> SpaceConfig:
        if dataset not in DATASET_SHAPES:
            raise ArchitectureError(f"dataset: unknown data set {dataset!r}; "
                                    f"expected one of {sorted(DATASET_SHAPES)}")
        if width_multiplier not in WIDTH_MULTIPLIERS:
            raise ArchitectureError(f"width_multiplier: {width_multiplier!r} is not one of "
                                    f"{list(WIDTH_MULTIPLIERS)}")
        in_channels, num_classes = DATASET_SHAPES[dataset]
        return cls(dataset, width_multiplier, in_channels, num_classes, 32)

    @classmethod
    def from_dict(cls, d: Any, where: str = "space") -> SpaceConfig:
        if not isinstance(d, Mapping):
            raise ArchitectureError(f"{where}: expected an object, got {type(d).__name__}")
        unknown = set(d) - {"dataset", "width_multiplier", "in_channels", "num_classes", "resolution"}
        if unknown:
            raise ArchitectureError(f"{where}: unknown field(s) {sorted(unknown)}")
        if "dataset" not in d:
            raise ArchitectureError(f"{where}.dataset: missing")
        if not isinstance(d["dataset"], str) or d["dataset"] not in DATASET_SHAPES:
            raise ArchitectureError(f"{where}.dataset: unknown data set {d['dataset']!r}; "
                                    f"expected one of {sorted(DATASET_SHAPES)}")
        width = _int_field(d, "width_multiplier", where, default=1)
        if width not in WIDTH_MULTIPLIERS:
            raise ArchitectureError(f"{where}.width_multiplier: {width!r} is not one of {list(WIDTH_MULTIPLIERS)}")
        base = cls.for_dataset(d["dataset"], width)
        for key in ("in_channels", "num_classes", "resolution"):
            if key in d and _int_field(d, key, where) != getattr(base, key):
                raise ArchitectureError(f"{where}.{key}: {d[key]!r} does not match data set "
                                        f"{base.dataset!r} (expected {getattr(base, key)})")
        return base


# data set -> (input channels, classes); all inputs are 32x32 (Fashion-MNIST padded from 28).
DATASET_SHAPES: dict[str, tuple[int, int]] = {
    "cifar10": (3, 10),
    "svhn": (3, 10),
    "fashion_mnist": (1, 10),
}


def _int_field(d: Mapping, key: str, where: str, default: int | None = None) -> int:
    if key not in d:
        if default is None:
            raise ArchitectureError(f"{where}.{key}: missing")
        return default
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            return int(v)
        raise ArchitectureError(f"{where}.{key}: expected an integer, got {v!r}")
    return v


# --------------------------------------------------------------------------- architecture
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

    # ---- genome (block id, ratio id) used by the search strategies
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

    @property
    def key(self) -> str:
        """Canonical string key (used to deduplicate and to persist tuner state)."""
        return "-".join(f"{b}:{ratio_index(r)}" for b, r in zip(self.blocks, self.ratios, strict=True))

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
        _check_version(d, where)
        unknown = set(d) - {"format", "version", "space", "layers", "objectives", "provenance"}
        if unknown:
            raise ArchitectureError(f"{where}: unknown field(s) {sorted(unknown)}")
        if space is not None:
            if "space" not in d:
                raise ArchitectureError(f"{where}.space: missing (expected {space.to_dict()})")
            file_space = SpaceConfig.from_dict(d["space"], f"{where}.space")
            if file_space != space:
                raise ArchitectureError(f"{where}.space: architecture belongs to {file_space.to_dict()}, "
                                        f"not to {space.to_dict()}")
        elif "space" in d:
            SpaceConfig.from_dict(d["space"], f"{where}.space")
        layers = d.get("layers")
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
        objectives = d.get("objectives", {})
        if not isinstance(objectives, Mapping):
            raise ArchitectureError(f"{where}.objectives: expected an object of numbers, got {objectives!r}")
        for k, v in objectives.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ArchitectureError(f"{where}.objectives.{k}: {v!r} is not a number")
            if not math.isfinite(v):
                raise ArchitectureError(f"{where}.objectives.{k}: {v!r} is not a finite number")
        provenance = d.get("provenance", {})
        if not isinstance(provenance, Mapping):
            raise ArchitectureError(f"{where}.provenance: expected an object, got {provenance!r}")
        try:
            return cls(tuple(blocks), tuple(ratios), dict(objectives), dict(provenance))
        except ArchitectureError as e:
            raise ArchitectureError(f"{where}.{e}") from None

    def describe(self) -> str:
        return ", ".join(f"{i}:{BLOCKS[b].short}x{r}" for i, (b, r) in enumerate(
            zip(self.blocks, self.ratios, strict=True)))


def _as_block_id(v: Any, where: str) -> int:
    if isinstance(v, bool):
        raise ArchitectureError(f"{where}: {v!r} is not a block id")
    if isinstance(v, float) and v.is_integer():
        v = int(v)
    if not isinstance(v, int):
        raise ArchitectureError(f"{where}: {v!r} is not a block id 0..{NUM_BLOCKS - 1}")
    return v


LAYER_FIELDS = frozenset({"block", "ratio", "name"})


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


def _check_version(d: Mapping, where: str) -> None:
    """``version`` must be the integer this tool reads (``true`` is not 1, and neither is ``1.0``)."""
    v = d.get("version")
    if isinstance(v, bool) or not isinstance(v, int) or v != FORMAT_VERSION:
        raise ArchitectureError(f"{where}.version: unsupported version {v!r} (this tool reads {FORMAT_VERSION})")


# --------------------------------------------------------------------------- files
def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file and rename: never a half-written file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _read_json(path: str | os.PathLike) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        raise ArchitectureError(f"{path}: file not found") from None
    except json.JSONDecodeError as e:
        raise ArchitectureError(f"{path}: not valid JSON ({e})") from None


def save_architecture(arch: Architecture, path: str | os.PathLike, space: SpaceConfig | None = None) -> None:
    atomic_write_text(path, json.dumps(arch.to_dict(space), indent=2) + "\n")


def load_architecture(path: str | os.PathLike, space: SpaceConfig | None = None) -> Architecture:
    """Read one architecture file (or an NNI sample dict in a file); errors name the file and field."""
    d = _read_json(path)
    if isinstance(d, Mapping) and "format" not in d and "layer_0" in d:
        return Architecture.from_sample(d, where=str(path))
    return Architecture.from_dict(d, where=str(path), space=space)


def read_space(path: str | os.PathLike) -> SpaceConfig | None:
    """The ``space`` recorded in an architecture or front file, if any."""
    d = _read_json(path)
    if isinstance(d, Mapping) and "space" in d:
        return SpaceConfig.from_dict(d["space"], f"{path}.space")
    return None


@dataclass(frozen=True)
class Objective:
    name: str
    direction: str  # "max" | "min"

    def __post_init__(self) -> None:
        if self.direction not in ("max", "min"):
            raise ArchitectureError(f"objective {self.name!r}: direction must be 'max' or 'min', "
                                    f"got {self.direction!r}")


DEFAULT_OBJECTIVES = (Objective("adv_acc", "max"), Objective("clean_acc", "max"), Objective("params", "min"))


def front_to_dict(archs: Sequence[Architecture], objectives: Sequence[Objective] = DEFAULT_OBJECTIVES,
                  space: SpaceConfig | None = None, **meta: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"format": FRONT_FORMAT, "version": FORMAT_VERSION}
    if space is not None:
        d["space"] = space.to_dict()
    d["objectives"] = [{"name": o.name, "direction": o.direction} for o in objectives]
    d.update(meta)
    d["architectures"] = [a.to_dict(space) for a in archs]
    return d


def save_front(path: str | os.PathLike, archs: Sequence[Architecture],
               objectives: Sequence[Objective] = DEFAULT_OBJECTIVES,
               space: SpaceConfig | None = None, **meta: Any) -> None:
    atomic_write_text(path, json.dumps(front_to_dict(archs, objectives, space, **meta), indent=2) + "\n")


def load_front(path: str | os.PathLike, space: SpaceConfig | None = None
               ) -> tuple[list[Architecture], list[Objective], SpaceConfig | None]:
    """Read a front file: (architectures, objectives, space); every entry is validated.

    Top-level keys other than the documented ones are metadata (``save_front(**meta)`` writes
    ``source``, ``generation``, ``seed``, ``selection``, ...) and are not interpreted.
    """
    d = _read_json(path)
    where = str(path)
    if not isinstance(d, Mapping) or d.get("format") != FRONT_FORMAT:
        got = d.get("format") if isinstance(d, Mapping) else type(d).__name__
        raise ArchitectureError(f"{where}.format: expected {FRONT_FORMAT!r}, got {got!r}")
    _check_version(d, where)
    file_space = SpaceConfig.from_dict(d["space"], f"{where}.space") if "space" in d else None
    if space is not None and file_space is not None and file_space != space:
        raise ArchitectureError(f"{where}.space: front belongs to {file_space.to_dict()}, not {space.to_dict()}")
    objs_raw = d.get("objectives")
    if not isinstance(objs_raw, list):
        raise ArchitectureError(f"{where}.objectives: expected a list of {{name, direction}}, got {objs_raw!r}")
    objectives: list[Objective] = []
    for i, o in enumerate(objs_raw):
        ow = f"{where}.objectives[{i}]"
        if not isinstance(o, Mapping) or "name" not in o or "direction" not in o:
            raise ArchitectureError(f"{ow}: expected {{name, direction}}, got {o!r}")
        unknown = set(o) - {"name", "direction"}
        if unknown:
            raise ArchitectureError(f"{ow}: unknown field(s) {sorted(unknown, key=str)}")
        name, direction = o["name"], o["direction"]
        if not isinstance(name, str) or not name:
            raise ArchitectureError(f"{ow}.name: {name!r} is not a non-empty string")
        if name in (x.name for x in objectives):
            raise ArchitectureError(f"{ow}.name: {name!r} is listed twice")
        if direction not in ("max", "min"):
            raise ArchitectureError(f"{ow}.direction: {direction!r} is not 'max' or 'min'")
        objectives.append(Objective(name, direction))
    archs_raw = d.get("architectures")
    if not isinstance(archs_raw, list):
        raise ArchitectureError(f"{where}.architectures: expected a list")
    archs = [Architecture.from_dict(a, where=f"{where}.architectures[{i}]",
                                    space=(file_space or space) if isinstance(a, Mapping) and "space" in a else None)
             for i, a in enumerate(archs_raw)]
    return archs, objectives, file_space
