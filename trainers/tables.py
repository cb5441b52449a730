"""Markdown layout of evaluation results (the paper's Tables II-XII), torch-free.

:func:`robustness_table` renders results of :func:`trainers.evaluation.evaluate_robustness`
(or anything of that shape: ``params``, ``clean_acc``, ``pgd`` records with ``steps``,
``epsilon`` and ``acc``, optional ``autoattack``), so the analysis report can format tables
without importing torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["epsilon_label", "robustness_table"]


def epsilon_label(epsilon: float) -> str:
    """``"8/255"`` when ε is a multiple of 1/255, else ``"0.1"``."""
    k = epsilon * 255
    if abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return f"{epsilon:g}"


def _format_size(params: int | None) -> str:
    if params is None:
        return "–"
    return f"{params / 1e6:.4f}M" if params >= 1_000_000 else f"{params / 1e3:.1f}K"


def robustness_table(
    results: Mapping[str, Mapping[str, Any]] | Sequence[tuple[str, Mapping[str, Any]]],
) -> str:
    """Markdown table of evaluation results in the layout of the paper's Tables II–XII.

    Columns: name, Size, Clean, then ``P^{steps}_{ε}`` grouped by steps (ascending
    ε within a group, as in the paper), then AutoAttack if present. Accuracies in
    % with two decimals.

    Parameters
    ----------
    results : mapping or sequence of (name, result)
        Results of :func:`evaluate_robustness` (rows, in order).
    """
    rows = list(results.items()) if isinstance(results, Mapping) else list(results)
    if not rows:
        raise ValueError("robustness_table needs at least one result")
    columns: list[tuple[int, float, str]] = []
    for _, result in rows:
        for record in result.get("pgd", []):
            key = (int(record["steps"]), float(record["epsilon"]), epsilon_label(float(record["epsilon"])))
            if key not in columns:
                columns.append(key)
    columns.sort(key=lambda c: (c[0], c[1]))
    aa = [result.get("autoattack") for _, result in rows]
    aa_label = next((f"AA$_{{{epsilon_label(a['epsilon'])}}}$" for a in aa if a), None)

    header = ["Model", "Size", "Clean"] + [f"$P^{{{s}}}_{{{label}}}$" for s, _, label in columns]
    if aa_label:
        header.append(aa_label)
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, result in rows:
        by_key = {(int(r["steps"]), float(r["epsilon"])): r["acc"] for r in result.get("pgd", [])}
        cells = [name, _format_size(result.get("params")), f"{100 * result['clean_acc']:.2f}"]
        cells += [f"{100 * by_key[(s, e)]:.2f}" if (s, e) in by_key else "–" for s, e, _ in columns]
        if aa_label:
            a = result.get("autoattack")
            cells.append(f"{100 * a['acc']:.2f}" if a else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
