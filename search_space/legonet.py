"""LegoNet (paper §IV-E3): the most frequent block and ratio per layer of the top subnets.

Statistics tables use the layout of Tables XIV/XV: a CSV with a ``layer`` column (0-15) and one
column per block id (0-21) or per ratio id (0-9), each cell a count. The paper's CIFAR-10 tables
ship in ``paper_tables/`` and are the default input.

Ties go to the lower id. A stride-2 layer ignores pure robust blocks (18-21): Table XIV counts one
block 18 in layer 12, which the stride-2 rule (docs/architecture.md §3) cannot build.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Sequence
from pathlib import Path

from .architecture import Architecture
from .space import NUM_BLOCKS, NUM_LAYERS, RATIOS, ArchitectureError, allowed_blocks

PAPER_TABLES = Path(__file__).parent / "paper_tables"
PAPER_BLOCK_STATS = PAPER_TABLES / "block_stats_cifar10.csv"
PAPER_RATIO_STATS = PAPER_TABLES / "ratio_stats_cifar10.csv"

StatsTable = list[list[int]]  # [layer][id] -> count


def read_stats_csv(path: str | os.PathLike, n_ids: int) -> StatsTable:
    """Read a Table XIV/XV-style CSV; errors name the file, row and column."""
    path = Path(path)
    try:
        with open(path, newline="") as f:
            rows = list(csv.reader(f))
    except FileNotFoundError:
        raise ArchitectureError(f"{path}: file not found") from None
    expected = ["layer", *[str(i) for i in range(n_ids)]]
    if not rows or [c.strip() for c in rows[0]] != expected:
        raise ArchitectureError(f"{path}: header must be {','.join(expected)}")
    table: StatsTable = [[0] * n_ids for _ in range(NUM_LAYERS)]
    seen = set()
    for line, row in enumerate(rows[1:], start=2):
        if not any(c.strip() for c in row):
            continue
        if len(row) != n_ids + 1:
            raise ArchitectureError(f"{path}:{line}: expected {n_ids + 1} columns, got {len(row)}")
        try:
            layer = int(row[0])
        except ValueError:
            raise ArchitectureError(f"{path}:{line}: layer {row[0]!r} is not an integer") from None
        if not 0 <= layer < NUM_LAYERS or layer in seen:
            raise ArchitectureError(f"{path}:{line}: layer {layer} out of range or repeated")
        seen.add(layer)
        for col, cell in enumerate(row[1:]):
            try:
                count = int(cell) if cell.strip() else 0
            except ValueError:
                raise ArchitectureError(f"{path}:{line}: column {col}: {cell!r} is not a count") from None
            if count < 0:
                raise ArchitectureError(f"{path}:{line}: column {col}: negative count {count}")
            table[layer][col] = count
    if len(seen) != NUM_LAYERS:
        raise ArchitectureError(f"{path}: missing layer(s) {sorted(set(range(NUM_LAYERS)) - seen)}")
    return table


def write_stats_csv(path: str | os.PathLike, table: Sequence[Sequence[int]]) -> None:
    from .files import atomic_write_text

    n_ids = len(table[0])
    lines = ["layer," + ",".join(str(i) for i in range(n_ids))]
    lines += [f"{layer}," + ",".join(str(int(c)) for c in row) for layer, row in enumerate(table)]
    atomic_write_text(path, "\n".join(lines) + "\n")


def count_statistics(archs: Sequence[Architecture]) -> tuple[StatsTable, StatsTable]:
    """Block and ratio counts per layer over ``archs`` (Tables XIV/XV, lower halves)."""
    blocks = [[0] * NUM_BLOCKS for _ in range(NUM_LAYERS)]
    ratios = [[0] * len(RATIOS) for _ in range(NUM_LAYERS)]
    for arch in archs:
        for layer, (b, r) in enumerate(arch.genes):
            blocks[layer][b] += 1
            ratios[layer][r] += 1
    return blocks, ratios


def _argmax(counts: Sequence[int], allowed: Sequence[int]) -> int:
    return max(allowed, key=lambda i: (counts[i], -i))


def most_frequent(counts: Sequence[int], n: int = 2) -> list[int]:
    """The ``n`` most frequent ids with a non-zero count, ties to the lower id (Figs. 8-9: two per layer)."""
    ranked = sorted((i for i, c in enumerate(counts) if c > 0), key=lambda i: (-counts[i], i))
    return ranked[:n]


def legonet(block_stats: StatsTable, ratio_stats: StatsTable) -> Architecture:
    """The LegoNet architecture: per layer, the most frequent allowed block and the most frequent ratio."""
    blocks = tuple(_argmax(block_stats[i], allowed_blocks(i)) for i in range(NUM_LAYERS))
    ratios = tuple(RATIOS[_argmax(ratio_stats[i], range(len(RATIOS)))] for i in range(NUM_LAYERS))
    return Architecture(blocks, ratios, provenance={"built_by": "legonet"})


def legonet_from_files(block_csv: str | os.PathLike = PAPER_BLOCK_STATS,
                       ratio_csv: str | os.PathLike = PAPER_RATIO_STATS) -> Architecture:
    return legonet(read_stats_csv(block_csv, NUM_BLOCKS), read_stats_csv(ratio_csv, len(RATIOS)))
