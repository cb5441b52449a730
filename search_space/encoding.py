"""The TAM-NAS encoding in one import: the space tables, the architecture and its files.

A facade only; the code lives in :mod:`search_space.space` (tables, subsets, ``SpaceConfig``,
the nnictl search space), :mod:`search_space.architecture` (``Architecture`` and every
conversion of it) and :mod:`search_space.files` (architecture and front files, atomic writes).
"""

from __future__ import annotations

from .architecture import (
    ARCH_FORMAT,
    DEFAULT_OBJECTIVES,
    FORMAT_VERSION,
    LAYER_FIELDS,
    Architecture,
    Objective,
)
from .files import (
    FRONT_FORMAT,
    atomic_write_text,
    front_to_dict,
    load_architecture,
    load_front,
    read_document,
    read_json,
    read_space,
    save_architecture,
    save_front,
)
from .space import (
    BLOCKS,
    DEFAULT_RATIO,
    NUM_BLOCKS,
    NUM_LAYERS,
    RATIOS,
    STAGE_CHANNELS,
    STAGE_REPEATS,
    STRIDE2_LAYERS,
    WIDTH_MULTIPLIERS,
    ArchitectureError,
    BlockSpec,
    SpaceConfig,
    allowed_blocks,
    block_subset,
    candidate_blocks,
    check_search_space,
    layer_channels,
    layer_stride,
    nni_search_space,
    ratio_index,
    ratio_subset,
)

__all__ = [
    "ARCH_FORMAT", "BLOCKS", "DEFAULT_OBJECTIVES", "DEFAULT_RATIO", "FORMAT_VERSION", "FRONT_FORMAT",
    "LAYER_FIELDS", "NUM_BLOCKS", "NUM_LAYERS", "RATIOS", "STAGE_CHANNELS", "STAGE_REPEATS", "STRIDE2_LAYERS",
    "WIDTH_MULTIPLIERS", "Architecture", "ArchitectureError", "BlockSpec", "Objective", "SpaceConfig",
    "allowed_blocks", "atomic_write_text", "block_subset", "candidate_blocks", "check_search_space",
    "front_to_dict", "layer_channels", "layer_stride", "load_architecture", "load_front", "nni_search_space",
    "ratio_index", "ratio_subset", "read_document", "read_json", "read_space", "save_architecture", "save_front",
]
