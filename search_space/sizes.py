"""How each reading of Table I fits the model sizes the paper reports (README "Model sizes").

Torch-free: every count comes from the parameter table (:mod:`search_space.params`), which the
tests hold equal to the built model for every reading. ``python -m search_space sizes`` prints
:func:`fit_table` as the README's Markdown table (or ``--json``).

The paper's sizes (all CIFAR-10 unless noted):

- the LegoNet of Tables XIV/XV at width 2: 2.1546M (Tables XI, XIII);
- the width-1 subnets of Tables IV-VIII: 1.6632M-1.7574M (SVHN: up to 1.7657M);
- the width-2 subnets: 2.1676M (SVHN)-2.1878M (Tables VIII, XI, XII);
- width 1 to width 2: +24.4 % (§IV-C, 1.7574M -> 2.1878M, two different subnets);
- the block phase's constraint 1.823M-2.375M (§III-C1), sampled with blocks only (ratio 1.0).
"""

from __future__ import annotations

from typing import Any

from .legonet import legonet_from_files
from .params import param_table
from .space import READINGS, SpaceConfig

PAPER_LEGONET_2X = 2_154_600
PAPER_SUBNETS_1X = (1_663_200, 1_757_400)
PAPER_SUBNETS_2X = (2_167_600, 2_187_800)
PAPER_GROWTH = 0.244
PAPER_BLOCK_PHASE = (1_823_000, 2_375_000)


def _overlaps(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] <= b[1] and b[0] <= a[1]


def _contains(outer: tuple[int, int], inner: tuple[int, int]) -> bool:
    return outer[0] <= inner[0] and inner[1] <= outer[1]


def reading_fit(reading: str, dataset: str = "cifar10") -> dict[str, Any]:
    """Every reported size against the ``reading``'s parameter table (see the module docstring)."""
    lego = legonet_from_files()
    t1 = param_table(SpaceConfig.for_dataset(dataset, 1, reading))
    t2 = param_table(SpaceConfig.for_dataset(dataset, 2, reading))
    l1, l2 = t1.count(lego), t2.count(lego)
    s1, s2 = t1.interval(), t2.interval()
    b1, b2 = t1.interval(ratios=[1.0]), t2.interval(ratios=[1.0])
    return {
        "reading": reading, "summary": READINGS[reading].summary, "dataset": dataset,
        "legonet_1x": l1, "legonet_2x": l2, "legonet_2x_error": l2 / PAPER_LEGONET_2X - 1,
        "legonet_growth": l2 / l1 - 1,
        "space_1x": list(s1), "space_2x": list(s2), "ratio1_1x": list(b1), "ratio1_2x": list(b2),
        "subnets_1x_inside": _contains(s1, PAPER_SUBNETS_1X),
        "subnets_2x_inside": _contains(s2, PAPER_SUBNETS_2X),
        "block_phase_reachable_1x": _overlaps(b1, PAPER_BLOCK_PHASE),
        "block_phase_reachable_2x": _overlaps(b2, PAPER_BLOCK_PHASE),
    }


def fit_table(dataset: str = "cifar10") -> list[dict[str, Any]]:
    return [reading_fit(r, dataset) for r in READINGS]


def best_reading(rows: list[dict[str, Any]]) -> str:
    """The reading that meets the most reported sizes, then the smallest LegoNet error, then growth error."""
    def score(r: dict[str, Any]) -> tuple:
        met = sum(bool(r[k]) for k in ("subnets_1x_inside", "subnets_2x_inside", "block_phase_reachable_1x",
                                        "block_phase_reachable_2x")) + (abs(r["legonet_2x_error"]) <= 0.10)
        return -met, abs(r["legonet_2x_error"]), abs(r["legonet_growth"] - PAPER_GROWTH)
    return min(rows, key=score)["reading"]


def _m(n: float) -> str:
    return f"{n / 1e6:.3f}M"


def _range(r: list[int], ok: bool | None = None) -> str:
    mark = "" if ok is None else (" ✓" if ok else " ✗")
    return f"{_m(r[0])}–{_m(r[1])}{mark}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The README table: one row per reading, each reported size with its error or ✓/✗."""
    lines = [
        "| reading | LegoNet 2× (paper 2.1546M) | LegoNet 1× → 2× (paper +24.4 %) | 1× space (paper's subnets "
        "1.66M–1.76M) | 2× space (paper's 2.17M–2.19M) | ratio 1.0, 1× (block phase 1.823M–2.375M) "
        "| ratio 1.0, 2× |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| `{r['reading']}` | {r['legonet_2x']:,} ({100 * r['legonet_2x_error']:+.1f} %) "
            f"| {_m(r['legonet_1x'])} → {_m(r['legonet_2x'])} ({100 * r['legonet_growth']:+.1f} %) "
            f"| {_range(r['space_1x'], r['subnets_1x_inside'])} | {_range(r['space_2x'], r['subnets_2x_inside'])} "
            f"| {_range(r['ratio1_1x'], r['block_phase_reachable_1x'])} "
            f"| {_range(r['ratio1_2x'], r['block_phase_reachable_2x'])} |")
    lines.append("")
    lines.append(f"Best fit: `{best_reading(rows)}` (meets the most reported sizes, then the smallest LegoNet error).")
    return "\n".join(lines)
