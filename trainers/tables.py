"""Markdown layout of evaluation results (the paper's Tables II-XII), torch-free.

:func:`robustness_table` renders results of :func:`trainers.evaluation.evaluate_robustness`
(or anything of that shape: ``params``, ``clean_acc``, ``pgd`` records with ``steps``,
``epsilon`` and ``acc``, optional ``autoattack``), so the analysis report can format tables
without importing torch.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["NOTATIONS", "column_titles", "epsilon_label", "format_size", "robustness_table"]


def epsilon_label(epsilon: float) -> str:
    """``"8/255"`` when ε is a multiple of 1/255, else ``"0.1"``."""
    k = epsilon * 255
    if abs(k - round(k)) < 1e-6:
        return f"{round(k)}/255"
    return f"{epsilon:g}"


def format_size(params: int | None) -> str:
    """``1.4296M`` or ``812.3K``; ``–`` when unknown."""
    if params is None:
        return "–"
    return f"{params / 1e6:.4f}M" if params >= 1_000_000 else f"{params / 1e3:.1f}K"


NOTATIONS = ("paper", "plain")


def column_titles(columns: Sequence[tuple[int, float, str]], aa_epsilon: str | None,
                  notation: str = "paper", aa_pgd_steps: int | None = None) -> list[str]:
    """Titles of the Clean, PGD and AutoAttack columns: the paper's LaTeX (``$P^{10}_{8/255}$``)
    or plain text (``clean``, ``pgd10@8/255``, ``autoattack@8/255``); with ``aa_pgd_steps``, a
    column before AutoAttack's for the grid's PGD on AutoAttack's images (``pgd10@8/255 (AA's images)``)."""
    if notation not in NOTATIONS:
        raise ValueError(f"notation: expected one of {NOTATIONS}, got {notation!r}")
    same = []
    if notation == "plain":
        titles = ["clean"] + [f"pgd{s}@{label}" for s, _, label in columns]
        if aa_epsilon and aa_pgd_steps:
            same = [f"pgd{aa_pgd_steps}@{aa_epsilon} (AA's images)"]
        return titles + same + ([f"autoattack@{aa_epsilon}"] if aa_epsilon else [])
    titles = ["Clean"] + [f"$P^{{{s}}}_{{{label}}}$" for s, _, label in columns]
    if aa_epsilon and aa_pgd_steps:
        same = [f"$P^{{{aa_pgd_steps}}}_{{{aa_epsilon}}}$ (AA's images)"]
    return titles + same + ([f"AA$_{{{aa_epsilon}}}$"] if aa_epsilon else [])


def _on_fewer_images(result: Mapping[str, Any]) -> bool:
    """AutoAttack ran on fewer images than the rest of ``result`` and PGD was counted on those."""
    a = result.get("autoattack")
    if not a or not a.get("pgd") or not a.get("num_examples") or not result.get("num_examples"):
        return False
    return int(a["num_examples"]) < int(result["num_examples"])


def robustness_table(
    results: Mapping[str, Mapping[str, Any]] | Sequence[tuple[str, Mapping[str, Any]]],
    *, notation: str = "paper",
) -> str:
    """Markdown table of evaluation results in the layout of the paper's Tables II–XII.

    Columns: name, Size, Clean, then ``P^{steps}_{ε}`` grouped by steps (ascending
    ε within a group, as in the paper), then AutoAttack if present. When AutoAttack ran on
    fewer images than the grid (its ``num_examples`` below the result's) and its record has
    ``pgd``, a column before it gives that PGD on AutoAttack's images, so the worst case over
    AutoAttack's attacks is read against PGD on the same images. Accuracies in % with two decimals.

    Parameters
    ----------
    results : mapping or sequence of (name, result)
        Results of :func:`evaluate_robustness` (rows, in order).
    notation : {"paper", "plain"}
        Column titles in the paper's LaTeX or as plain text (:func:`column_titles`).
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
    aa_label = next((epsilon_label(a["epsilon"]) for a in aa if a), None)
    fewer = [result for _, result in rows if _on_fewer_images(result)]
    aa_pgd_steps = next((int(r["autoattack"]["pgd"].get("steps") or max(s for s, _, _ in columns))
                         for r in fewer), None) if columns else None

    header = ["Model", "Size", *column_titles(columns, aa_label, notation, aa_pgd_steps)]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, result in rows:
        by_key = {(int(r["steps"]), float(r["epsilon"])): r["acc"] for r in result.get("pgd", [])}
        cells = [name, format_size(result.get("params")), f"{100 * result['clean_acc']:.2f}"]
        cells += [f"{100 * by_key[(s, e)]:.2f}" if (s, e) in by_key else "–" for s, e, _ in columns]
        a = result.get("autoattack")
        if aa_pgd_steps:
            cells.append(f"{100 * a['pgd']['acc']:.2f}" if _on_fewer_images(result) else "–")
        if aa_label:
            cells.append(f"{100 * a['acc']:.2f}" if a else "–")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
