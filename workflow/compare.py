"""Comparisons between retrain sets: the best of a set, Table X (scratch vs fine-tune)."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from .output import fmt, md_table
from .results import RetrainResult, metric_title


def best_result(results: Sequence[RetrainResult]) -> RetrainResult:
    """Highest adversarial accuracy, then clean accuracy, then fewer parameters."""
    return max(results, key=lambda r: (-math.inf if r.adv_acc is None else r.adv_acc, r.clean_acc, -r.params))


def retrain_sets(results: Iterable[RetrainResult]) -> dict[str, list[RetrainResult]]:
    """Results grouped by set name (``label (init)``), in first-seen order."""
    sets: dict[str, list[RetrainResult]] = {}
    for r in results:
        sets.setdefault(r.set_name, []).append(r)
    return sets


def scratch_finetune_pairs(sets: Mapping[str, Sequence[RetrainResult]]
                           ) -> list[tuple[str, Sequence[RetrainResult], Sequence[RetrainResult]]]:
    """(row name, scratch set, fine-tune set) for Table X: sets of the same label (supernet regime)
    that share architectures; without any, every scratch/fine-tune pair that shares architectures."""
    pairs = [(s_rs, f_rs) for s_rs in sets.values() for f_rs in sets.values()
             if s_rs[0].init == "scratch" and f_rs[0].init == "finetune"
             and {r.architecture for r in s_rs} & {r.architecture for r in f_rs}]
    same = [(s, f) for s, f in pairs if s[0].set_label == f[0].set_label]
    if same:
        return [(s[0].set_label, s, f) for s, f in same]
    return [(f"{s[0].set_name} vs {f[0].set_name}", s, f) for s, f in pairs]


def scratch_vs_finetune(scratch: Sequence[RetrainResult], finetune: Sequence[RetrainResult]
                        ) -> tuple[list[str], list[dict[str, Any]], dict[str, dict[str, float]]]:
    """Table X: per architecture retrained both ways, scratch minus fine-tune in accuracy points.

    Returns (metrics, per-architecture rows ``{"architecture", metric: diff}``, summary
    ``{metric: {"avg", "min", "max", "n"}}``) over the metrics both results have.
    """
    ft = {r.architecture: r for r in finetune}
    pairs = [(s, ft[s.architecture]) for s in scratch if s.architecture in ft]
    if not pairs:
        return [], [], {}
    metrics = [m for m in pairs[0][0].metrics() if all(m in s.metrics() and m in f.metrics() for s, f in pairs)]
    rows = []
    for s, f in pairs:
        sm, fm = s.metrics(), f.metrics()
        rows.append({"architecture": s.architecture, **{m: 100.0 * (sm[m] - fm[m]) for m in metrics}})
    summary = {m: {"avg": float(np.mean([r[m] for r in rows])), "min": float(min(r[m] for r in rows)),
                   "max": float(max(r[m] for r in rows)), "n": len(rows)} for m in metrics}
    return metrics, rows, summary


def table_x(rows: Sequence[Mapping[str, Any]]) -> str:
    """Paper layout of Table X: one row per pair, avg/min/max of clean and PGD at the fewest steps."""
    metrics = list(dict.fromkeys(r["metric"] for r in rows))
    pgd_steps = [int(m.group(1)) for m in (re.fullmatch(r"pgd(\d+)_eps.+", x) for x in metrics) if m]
    fewest = min(pgd_steps, default=None)
    shown = [m for m in metrics if m == "clean_acc" or (fewest is not None and m.startswith(f"pgd{fewest}_"))]
    header = ["Pair"] + [f"{metric_title(m)} {s}" for m in shown for s in ("avg", "min", "max")] + ["n"]
    by_pair: dict[str, dict[str, Mapping[str, Any]]] = {}
    for r in rows:
        by_pair.setdefault(r["pair"], {})[r["metric"]] = r
    body = []
    for pair, ms in by_pair.items():
        cells = [fmt(ms[m][s]) if m in ms else "–" for m in shown for s in ("avg", "min", "max")]
        body.append([pair, *cells, next(iter(ms.values()))["n"]])
    return md_table(header, body)
