"""Top-k subnets of a search, their block/ratio statistics (Tables XIV-XV) and the LegoNet they build.

Top-k subnets (paper §IV-F2: "top 10 subnets"): NSGA-II's own survival order over every
architecture the search evaluated (the tuner's saved state; the front alone when there is no
state): lower non-domination rank first, then larger crowding distance. The statistics are
written in the format :mod:`search_space.legonet` reads, so
``python -m workflow lego --block-stats block_stats.csv --ratio-stats ratio_stats.csv`` rebuilds
the same LegoNet.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_space.encoding import (
    BLOCKS,
    RATIOS,
    Architecture,
    Objective,
    SpaceConfig,
    save_architecture,
    save_front,
)
from search_space.legonet import StatsTable, count_statistics, legonet, most_frequent, write_stats_csv
from search_space.params import count_params
from strategies.objectives import objective_matrix
from strategies.operators import survival_select

from .choice import first_of_front, pick_front, with_legonet
from .output import write_csv
from .results import ReportError
from .search import SearchRun

logger = logging.getLogger(__name__)

DEFAULT_TOP_K = 10  # paper §IV-F2: statistics of the top 10 subnets
SELECTION = "NSGA-II rank, then crowding distance"


@dataclass
class Statistics:
    """Tables XIV-XV (lower halves) over the top-k subnets, and the LegoNet they build."""

    top: list[Architecture]
    blocks: StatsTable
    ratios: StatsTable
    legonet: Architecture
    k: int
    source: str


def top_k(archs: Sequence[Architecture], objectives: Sequence[Objective], k: int) -> list[Architecture]:
    """The ``k`` best architectures in NSGA-II's survival order (rank, then crowding distance)."""
    if k < 1:
        raise ReportError(f"--top-k: must be at least 1, got {k}")
    usable = [a for a in archs if all(o.name in a.objectives for o in objectives)]
    if len(usable) < len(archs):
        logger.warning("%d architecture(s) lack an objective of %s; left out of the top-k",
                       len(archs) - len(usable), [o.name for o in objectives])
    if not usable:
        return []
    F = objective_matrix([a.objectives for a in usable], objectives)
    return [usable[i] for i in survival_select(F, min(k, len(usable)))]


def search_statistics(search: SearchRun, k: int = DEFAULT_TOP_K) -> Statistics:
    """Block and ratio counts per layer over the search's top-k subnets, and their LegoNet."""
    top = top_k(search.evaluated, search.objectives, k)
    if not top:
        raise ReportError(f"{search.directory}: no evaluated architecture with objectives "
                          f"{[o.name for o in search.objectives]}")
    if len(top) < k:
        logger.warning("top-%d requested but the search evaluated only %d architectures", k, len(top))
    blocks, ratios = count_statistics(top)
    built = legonet(blocks, ratios)
    space = search.space
    if space is None:
        space = SpaceConfig()
        logger.warning("%s records no space: LegoNet parameters counted for %s", search.directory, space.to_dict())
    lego = Architecture(built.blocks, built.ratios, {"params": float(count_params(built, space))},
                        {"built_by": "legonet", "search": search.name, "top_k": len(top),
                         "selection": SELECTION, "source": search.evaluated_source})
    return Statistics(top, blocks, ratios, lego, len(top), search.evaluated_source)


def write_statistics(stats: Statistics, search: SearchRun, out: Path) -> list[str]:
    """``block_stats.csv``, ``ratio_stats.csv`` (LegoNet builder format), ``stats_top2.csv``,
    ``topk.json`` and ``legonet.json`` in ``out``; returns the file names."""
    write_stats_csv(out / "block_stats.csv", stats.blocks)
    write_stats_csv(out / "ratio_stats.csv", stats.ratios)
    rows = []
    for what, table, names in (("block", stats.blocks, [b.short for b in BLOCKS]),
                               ("ratio", stats.ratios, [f"{r:.1f}" for r in RATIOS])):
        for layer, counts in enumerate(table):
            row: dict[str, Any] = {"table": what, "layer": layer}
            top = most_frequent(counts, 2)
            for rank, name in enumerate(("first", "second")):
                i = top[rank] if rank < len(top) else None
                row.update({f"{name}_id": i, f"{name}_name": None if i is None else names[i],
                            f"{name}_count": 0 if i is None else counts[i]})
            rows.append(row)
    write_csv(out / "stats_top2.csv", rows)
    save_front(out / "topk.json", stats.top, search.objectives, search.space, source=str(search.directory),
               selection=f"top {stats.k} by {SELECTION} ({stats.source})")
    save_architecture(stats.legonet, out / "legonet.json", search.space)
    return ["block_stats.csv", "ratio_stats.csv", "stats_top2.csv", "topk.json", "legonet.json"]


def write_retrain_front(search: SearchRun, lego: Architecture, path: Path, *,
                        roles: Sequence[str] | None = None, front_top: int | None = None,
                        legonet: bool = True) -> list[Architecture]:
    """A front-format file of what to retrain: one front architecture per role (:mod:`workflow.choice`)
    or the first ``front_top``, plus the LegoNet (once; not with ``legonet=False``); each with its
    ``label`` and ``why``.

    ``python -m trainers.retrain space PATH`` turns it into the retrain experiment's search space;
    ``python -m workflow gather --front PATH`` labels the results with it.
    """
    if (roles is None) == (front_top is None):
        raise ValueError("write_retrain_front: give roles or front_top")
    if front_top is not None and front_top < 0:
        raise ValueError(f"--front-top: must be >= 0, got {front_top}")
    picked = pick_front(search.front, roles) if roles is not None else first_of_front(search.front, front_top)
    archs = with_legonet(picked, lego) if legonet else list(picked)
    if not archs:
        raise ValueError("write_retrain_front: nothing to retrain (no front architecture picked and no LegoNet)")
    what = f"front {', '.join(roles)}" if roles is not None else f"first {front_top} front architecture(s)"
    save_front(path, archs, search.objectives, search.space, source=str(search.directory),
               selection=f"{what} + LegoNet" if legonet else what)
    return archs


def legonet_from_tables(block_stats: str | os.PathLike, ratio_stats: str | os.PathLike, space: SpaceConfig, *,
                        block_source: str, ratio_source: str) -> Architecture:
    """The LegoNet of Table XIV/XV-style CSVs (e.g. the paper's), with its parameters in ``space``."""
    from search_space.legonet import legonet_from_files

    arch = legonet_from_files(block_stats, ratio_stats)
    return Architecture(arch.blocks, arch.ratios, {"params": count_params(arch, space)},
                        {"built_by": "legonet", "block_stats": block_source, "ratio_stats": ratio_source})
