"""The TAM-NAS search space as tables (paper Tables I, XIV, XV) and the space of one supernet.

Pure Python (no torch): the search strategies, the tuner and every file reader import it.

- 16 choice layers in three stages (Table I); layers 0, 4 and 12 have stride 2.
- 22 candidate blocks, ids 0-21 as in Table XIV (:data:`BLOCKS`); the shape-preserving pure
  robust blocks (18-21) are not candidates in a stride-2 layer.
- ten channel-selector ratios 0.2 ... 2.0 (Table XV, ids 0-9).
- :class:`SpaceConfig`: the supernet an architecture belongs to (data set and width multiplier;
  channels and classes come from the data-set registry, :mod:`search_space.datasets`), and the
  :class:`Reading` of Table I and the blocks it is built with (:data:`READINGS`; README "Model sizes").
- :func:`nni_search_space`: the nnictl ``search_space.json`` of the encoding (equal to what
  ``TamNasSpace().simplify()`` gives, which a test checks), and :func:`check_search_space`.

See docs/architecture.md §3.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .datasets import DATASET_NAMES, dataset_spec

NUM_LAYERS = 16
STAGE_REPEATS = (4, 8, 4)
STAGE_CHANNELS = (48, 96, 192)
STRIDE2_LAYERS = (0, 4, 12)
RATIOS: tuple[float, ...] = tuple(round(0.2 * (i + 1), 1) for i in range(10))
DEFAULT_RATIO = 1.0
WIDTH_MULTIPLIERS = (1, 2, 4, 8)


class ArchitectureError(ValueError):
    """An architecture, a space or a file of them is invalid; the message names the field and value."""


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


# --------------------------------------------------------------------------- layers
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


# --------------------------------------------------------------------------- readings of Table I
@dataclass(frozen=True)
class Reading:
    """How Table I and the blocks (Fig. 3, 4) are read where the paper leaves a width open.

    ``head_se``: the width the head's SE row gates. Table I maps 1x1x176 to 1x1x920 in its "SE"
    row; an SE layer keeps its width, so either the SE gates the 176 pooled features and a 1x1
    conv goes to 920 (``176``), or a 1x1 conv goes to 920 and the SE gates those (``920``).
    ``non_local_inner``: the non-local layer's inner width on ``C`` channels: ``"half"`` is
    ``round(C/2 * ratio)`` (Wang et al.'s C/2 scaled by the channel selector), ``"full"`` is
    ``round(C * ratio)`` (the selector scales C itself; ratio 0.4 gives Wang's 0.5 C nearly).
    The rest is shared by every reading: SE reduction 4 (at least 8), the ratio scales half the
    block's output width in the ShuffleNet blocks, the width multiplier scales the three stages
    (stem and head keep Table I's widths).
    """

    name: str
    head_se: int = 176
    non_local_inner: str = "half"
    summary: str = ""


READINGS: dict[str, Reading] = {r.name: r for r in (
    Reading("default", 176, "half", "SE(176) then 1x1 conv 176->920; non-local inner round(C/2*ratio)"),
    Reading("head-se920", 920, "half", "1x1 conv 176->920 then SE(920); non-local inner round(C/2*ratio)"),
    Reading("paper-fit", 920, "full", "1x1 conv 176->920 then SE(920); non-local inner round(C*ratio)"),
)}
DEFAULT_READING = "default"


def reading(name: str) -> Reading:
    """The :class:`Reading` called ``name``; ``ArchitectureError`` naming the known ones otherwise."""
    if not isinstance(name, str) or name not in READINGS:
        raise ArchitectureError(f"reading: unknown reading {name!r}; expected one of {list(READINGS)}")
    return READINGS[name]


# --------------------------------------------------------------------------- the supernet's space
_SPACE_FIELDS = ("dataset", "width_multiplier", "in_channels", "num_classes", "resolution")
_OPTIONAL_FIELDS = ("reading",)  # written only when not the default, so older files stay valid
_DEFAULT_DATASET = dataset_spec("fashion_mnist")


@dataclass(frozen=True)
class SpaceConfig:
    """What an architecture was searched for: the supernet it belongs to.

    Build one with :meth:`for_dataset` (channels, classes and resolution from the data-set
    registry) or :meth:`from_dict` (a file's ``space``, validated). ``reading`` names the
    :class:`Reading` of Table I it is built with (:data:`READINGS`).
    """

    dataset: str = _DEFAULT_DATASET.name
    width_multiplier: int = 1
    in_channels: int = _DEFAULT_DATASET.in_channels
    num_classes: int = _DEFAULT_DATASET.num_classes
    resolution: int = _DEFAULT_DATASET.resolution
    reading: str = DEFAULT_READING

    def __post_init__(self) -> None:
        reading(self.reading)  # an unknown reading is an error here, not when a model is built

    @property
    def reading_spec(self) -> Reading:
        return READINGS[self.reading]

    def to_dict(self) -> dict[str, Any]:
        d = {k: getattr(self, k) for k in _SPACE_FIELDS}
        if self.reading != DEFAULT_READING:
            d["reading"] = self.reading
        return d

    def differences(self, other: SpaceConfig) -> list[tuple[str, Any, Any]]:
        """``(field, self's value, other's value)`` for every field the two spaces differ in, the
        reading included (``to_dict`` leaves a default reading out, so compare these, not dicts)."""
        names = (*_SPACE_FIELDS, *_OPTIONAL_FIELDS)
        return [(k, getattr(self, k), getattr(other, k)) for k in names if getattr(self, k) != getattr(other, k)]

    @classmethod
    def for_dataset(cls, dataset: str, width_multiplier: int = 1, reading: str = DEFAULT_READING) -> SpaceConfig:
        if not isinstance(dataset, str) or dataset not in DATASET_NAMES:
            raise ArchitectureError(f"dataset: unknown data set {dataset!r}; "
                                    f"expected one of {sorted(DATASET_NAMES)}")
        if width_multiplier not in WIDTH_MULTIPLIERS:
            raise ArchitectureError(f"width_multiplier: {width_multiplier!r} is not one of "
                                    f"{list(WIDTH_MULTIPLIERS)}")
        spec = dataset_spec(dataset)
        return cls(dataset, width_multiplier, spec.in_channels, spec.num_classes, spec.resolution, reading)

    @classmethod
    def from_dict(cls, d: Any, where: str = "space") -> SpaceConfig:
        if not isinstance(d, Mapping):
            raise ArchitectureError(f"{where}: expected an object, got {type(d).__name__}")
        unknown = set(d) - set(_SPACE_FIELDS) - set(_OPTIONAL_FIELDS)
        if unknown:
            raise ArchitectureError(f"{where}: unknown field(s) {sorted(unknown)}")
        if "dataset" not in d:
            raise ArchitectureError(f"{where}.dataset: missing")
        if not isinstance(d["dataset"], str) or d["dataset"] not in DATASET_NAMES:
            raise ArchitectureError(f"{where}.dataset: unknown data set {d['dataset']!r}; "
                                    f"expected one of {sorted(DATASET_NAMES)}")
        width = _int_field(d, "width_multiplier", where, default=1)
        if width not in WIDTH_MULTIPLIERS:
            raise ArchitectureError(f"{where}.width_multiplier: {width!r} is not one of {list(WIDTH_MULTIPLIERS)}")
        name = d.get("reading", DEFAULT_READING)
        if not isinstance(name, str) or name not in READINGS:
            raise ArchitectureError(f"{where}.reading: unknown reading {name!r}; expected one of {list(READINGS)}")
        base = cls.for_dataset(d["dataset"], width, name)
        for key in ("in_channels", "num_classes", "resolution"):
            if key in d and _int_field(d, key, where) != getattr(base, key):
                raise ArchitectureError(f"{where}.{key}: {d[key]!r} does not match data set "
                                        f"{base.dataset!r} (expected {getattr(base, key)})")
        return base


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


# --------------------------------------------------------------------------- nnictl search space
def nni_search_space() -> dict[str, dict[str, Any]]:
    """The nnictl ``search_space.json``: ``{"layer_i": {"_type": "choice", "_value": [block ids]},
    "ratio_i": {... Table XV ratios}}`` for i in 0..15, in that order.

    It does not depend on the data set or the width: one file serves every supernet.
    """
    space: dict[str, dict[str, Any]] = {}
    for i in range(NUM_LAYERS):
        space[f"layer_{i}"] = {"_type": "choice", "_value": list(allowed_blocks(i))}
        space[f"ratio_{i}"] = {"_type": "choice", "_value": list(RATIOS)}
    return space


def check_search_space(search_space: Any) -> None:
    """Raise ``ValueError`` naming the first key where ``search_space`` and the encoding differ.

    Integral floats may arrive as ints (NNI sends 1.0 as 1); choice order does not matter.
    """
    if not isinstance(search_space, Mapping):
        raise ValueError(f"search space: expected an object, got {type(search_space).__name__}")
    expected = nni_search_space()
    missing = sorted(set(expected) - set(search_space))
    extra = sorted(set(search_space) - set(expected))
    if missing or extra:
        raise ValueError(f"search space does not match the TAM-NAS encoding: missing keys {missing}, "
                         f"unknown keys {extra}")
    for key, exp in expected.items():
        got = search_space[key]
        if not isinstance(got, Mapping) or got.get("_type") != "choice" or not isinstance(got.get("_value"), list):
            raise ValueError(f"search space.{key}: expected {{'_type': 'choice', '_value': [...]}}, got {got!r}")
        values = got["_value"]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"search space.{key}: choices must be numbers, got {values!r}")
        if len(values) != len(exp["_value"]) or any(
                not any(math.isclose(float(v), float(e), abs_tol=1e-9) for v in values) for e in exp["_value"]):
            raise ValueError(f"search space.{key}: choices {values} differ from the encoding's {exp['_value']}")
