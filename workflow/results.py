"""Retrain results: the one reader of ``result.json``, the one experiment lookup, ``gather``.

A retrain run of :mod:`trainers.retrain` writes ``result.json`` (test-split numbers of one
architecture). :func:`read_result` reads one, naming the file and field of anything wrong;
:func:`load_retrain` reads every one under a retrain experiment (id or directory) and averages
the runs of an architecture; :func:`gather` turns them into ``results.csv`` and ``results.md``
(the table ``make demo`` prints). The report (:mod:`workflow.report`) reads the same records.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from search_space.encoding import BLOCKS, RATIOS, Architecture, ArchitectureError
from trainers.tables import epsilon_label, robustness_table

from .output import csv_text, images_caption, standard_error_points

logger = logging.getLogger(__name__)

INIT_NAMES = {"scratch": "trained from scratch", "finetune": "fine-tuned from the supernet"}
RESULT_COLUMNS = ("label", "set", "init", "seed", "runs", "params", "num_examples", "adv_acc")


class ReportError(ValueError):
    """Bad input to the report or ``gather``; the message names the file, field and value."""


def resolve_experiment(source: str | os.PathLike, what: str = "--search") -> Path:
    """A directory for ``source``: an existing path (a file stands for its folder) or an nnictl
    experiment id (looked up in nnictl's registry by :func:`strategies.export.experiment_dir`)."""
    path = Path(source)
    if path.exists():
        return path.parent if path.is_file() else path
    from strategies.export import experiment_dir

    try:
        return experiment_dir(str(source))
    except ValueError as e:
        raise ReportError(f"{what}: {e}") from None


@dataclass(frozen=True)
class RetrainResult:
    """One retrained architecture of one retrain set (mean over its runs), test-split numbers."""

    set_label: str
    init: str
    architecture: str
    params: int
    clean_acc: float
    adv_acc: float | None
    pgd: tuple[tuple[int, float, str, float], ...]  # (steps, epsilon, epsilon label, acc), grid order
    autoattack: float | None = None
    runs: int = 1
    sources: tuple[str, ...] = ()
    seed: int | None = None  # None: a mean over several seeds
    num_examples: int | None = None  # test images (None: not recorded, or differs between runs)
    autoattack_epsilon: float | None = None  # None: not recorded (then the grid's largest ε)
    autoattack_examples: int | None = None  # images AutoAttack ran on (None: not recorded)
    autoattack_pgd: float | None = None  # the grid's PGD at AutoAttack's ε on AutoAttack's images

    @property
    def set_name(self) -> str:
        return f"{self.set_label} ({self.init})"

    def metrics(self) -> dict[str, float]:
        """Accuracies by column name: ``clean_acc``, ``pgd{steps}_eps{label}``, ``autoattack``."""
        out = {"clean_acc": self.clean_acc}
        out.update({metric_key(s, lab): acc for s, _, lab, acc in self.pgd})
        if self.autoattack is not None:
            out["autoattack"] = self.autoattack
        return out

    def evaluation(self) -> dict[str, Any]:
        """The shape :func:`trainers.tables.robustness_table` renders."""
        aa_eps = (self.autoattack_epsilon if self.autoattack_epsilon is not None
                  else max((e for _, e, _, _ in self.pgd), default=0.0))
        aa_steps = max((s for s, e, _, _ in self.pgd if abs(e - aa_eps) < 1e-12), default=None)
        return {"params": self.params, "clean_acc": self.clean_acc, "num_examples": self.num_examples,
                "pgd": [{"steps": s, "epsilon": e, "epsilon_label": lab, "acc": a} for s, e, lab, a in self.pgd],
                "autoattack": ({"epsilon": aa_eps, "acc": self.autoattack, "num_examples": self.autoattack_examples,
                                "pgd": ({"steps": aa_steps, "epsilon": aa_eps, "acc": self.autoattack_pgd}
                                        if self.autoattack_pgd is not None else None)}
                               if self.autoattack is not None else None)}


def metric_key(steps: int, epsilon_label: str) -> str:
    return f"pgd{steps}_eps{epsilon_label}"


def metric_title(key: str) -> str:
    """Plain column title of a metric key: ``clean``, ``pgd10@0.1``, ``autoattack``."""
    if key.startswith("pgd") and "_eps" in key:
        steps, eps = key[3:].split("_eps", 1)
        return f"pgd{steps}@{eps}"
    return {"clean_acc": "clean"}.get(key, key)


def _number(d: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> float | None:
    if key not in d or d[key] is None:
        if optional:
            return None
        raise ReportError(f"{where}: field {key!r} missing")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ReportError(f"{where}.{key}: {v!r} is not a number")
    return float(v)


def _read_json_object(path: Path) -> dict[str, Any]:
    try:
        r = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(r, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(r).__name__}")
    for key in ("architecture", "init", "test"):
        if key not in r:
            raise ReportError(f"{path}: field {key!r} missing")
    return r


def read_result(path: str | os.PathLike, set_label: str) -> RetrainResult:
    """One ``result.json`` of :func:`trainers.retrain.retrain`; errors name the file and field."""
    path = Path(path)
    r = _read_json_object(path)
    try:
        key = Architecture.from_key(r["architecture"]).key
    except ArchitectureError as e:
        raise ReportError(f"{path}.architecture: {e}") from None
    test = r["test"]
    if not isinstance(test, Mapping) or not isinstance(test.get("pgd", []), list):
        raise ReportError(f"{path}.test: expected an object with a 'pgd' list, got {test!r}")
    pgd = []
    for i, rec in enumerate(test.get("pgd", [])):
        where = f"{path}.test.pgd[{i}]"
        if not isinstance(rec, Mapping):
            raise ReportError(f"{where}: expected an object, got {rec!r}")
        eps = _number(rec, "epsilon", where)
        label = rec.get("epsilon_label") or epsilon_label(eps)
        pgd.append((int(_number(rec, "steps", where)), eps, str(label), _number(rec, "acc", where)))
    aa = test.get("autoattack")
    seed = _number(r, "seed", str(path), optional=True)
    examples = _number(test, "num_examples", f"{path}.test", optional=True)
    return RetrainResult(
        set_label=set_label, init=str(r["init"]), architecture=key,
        params=int(_number(r, "params", str(path))), clean_acc=_number(r, "clean_acc", str(path)),
        adv_acc=_number(r, "adv_acc", str(path), optional=True), pgd=tuple(sorted(pgd)),
        autoattack=_number(aa, "acc", f"{path}.test.autoattack") if isinstance(aa, Mapping) else None,
        sources=(str(path.parent),), seed=None if seed is None else int(seed),
        num_examples=None if examples is None else int(examples),
        autoattack_epsilon=_number(aa, "epsilon", f"{path}.test.autoattack", optional=True)
        if isinstance(aa, Mapping) else None,
        autoattack_examples=_optional_int(aa, "num_examples", f"{path}.test.autoattack"),
        autoattack_pgd=_number(aa["pgd"], "acc", f"{path}.test.autoattack.pgd")
        if isinstance(aa, Mapping) and isinstance(aa.get("pgd"), Mapping) else None)


def _optional_int(record: Any, key: str, where: str) -> int | None:
    value = _number(record, key, where, optional=True) if isinstance(record, Mapping) else None
    return None if value is None else int(value)


def result_files(source: str | os.PathLike, what: str = "--retrain") -> tuple[Path, list[Path]]:
    """(directory, every ``result.json`` under it) of a retrain experiment (id or directory) or one file."""
    path = Path(source)
    if path.is_file():
        return path.parent, [path]
    directory = resolve_experiment(source, what)
    files = sorted(directory.rglob("result.json"))
    if not files:
        raise ReportError(f"{what}: no result.json under {directory}")
    return directory, files


def load_retrain(source: str, default_label: str | None = None) -> list[RetrainResult]:
    """Every ``result.json`` under a retrain experiment (id or directory), runs of one architecture averaged.

    ``source`` may be ``LABEL=ID_OR_DIR`` to name the set (e.g. the supernet regime); the default
    label is the experiment id (the folder's name).
    """
    label = default_label
    if not Path(source).exists() and "=" in source:
        label, source = source.split("=", 1)
        if not label:
            raise ReportError(f"--retrain: empty label in '={source}'")
    directory, files = result_files(source)
    label = label or directory.name
    return aggregate([read_result(f, label) for f in files])


def _mean_or_none(values: Sequence[float | None]) -> float | None:
    known = [v for v in values if v is not None]
    return float(np.mean(known)) if known and len(known) == len(values) else None


def aggregate(results: Sequence[RetrainResult]) -> list[RetrainResult]:
    """Mean over runs of the same (set, init, architecture) (e.g. several seeds), first-seen order."""
    groups: dict[tuple[str, str, str], list[RetrainResult]] = {}
    for r in results:
        groups.setdefault((r.set_label, r.init, r.architecture), []).append(r)
    out = []
    for (label, init, key), rs in groups.items():
        if len(rs) == 1:
            out.append(rs[0])
            continue
        grids = {tuple((s, e) for s, e, _, _ in r.pgd) for r in rs}
        if len(grids) != 1:
            raise ReportError(f"{', '.join(rs[0].sources + rs[1].sources)}: runs of {key} were evaluated on "
                              "different PGD grids; give them to --retrain as separate sets")
        pgd = tuple((s, e, lab, float(np.mean([r.pgd[j][3] for r in rs])))
                    for j, (s, e, lab, _) in enumerate(rs[0].pgd))
        advs = [r.adv_acc for r in rs if r.adv_acc is not None]
        examples = {r.num_examples for r in rs}
        aa_examples = {r.autoattack_examples for r in rs}
        out.append(RetrainResult(label, init, key, rs[0].params, float(np.mean([r.clean_acc for r in rs])),
                                 float(np.mean(advs)) if advs else None, pgd,
                                 _mean_or_none([r.autoattack for r in rs]), len(rs),
                                 tuple(s for r in rs for s in r.sources), None,
                                 examples.pop() if len(examples) == 1 else None, rs[0].autoattack_epsilon,
                                 aa_examples.pop() if len(aa_examples) == 1 else None,
                                 _mean_or_none([r.autoattack_pgd for r in rs])))
        logger.info("%s (%s): %s averaged over %d runs", label, init, key, len(rs))
    return out


def result_row(r: RetrainResult, label: str) -> dict[str, Any]:
    """One row of ``results.csv`` (the report's and ``gather``'s): label, set, sizes, accuracies, key."""
    return {"label": label, "set": r.set_name, "init": r.init, "seed": r.seed, "runs": r.runs,
            "params": r.params, "num_examples": r.num_examples, "adv_acc": r.adv_acc, **r.metrics(),
            # AutoAttack's images and the grid's PGD on them, when it ran on a subset
            **({"autoattack_examples": r.autoattack_examples, "autoattack_pgd": r.autoattack_pgd}
               if r.autoattack_pgd is not None and r.autoattack_examples and r.num_examples
               and r.autoattack_examples < r.num_examples else {}),
            "architecture": r.architecture, "dir": ";".join(r.sources)}


def key_format(example_key: str) -> str:
    """How to read an architecture key, with the first layer of ``example_key`` as the example."""
    b, r = Architecture.from_key(example_key).genes[0]
    return (f"Architecture keys are 16 `block:ratio` pairs joined by `-`, layer 0 first: `{b}:{r}` is block "
            f"{b} ({BLOCKS[b].short}) with channel ratio index {r}, i.e. ratio {RATIOS[r]:.1f} (ratio index i "
            "is ratio 0.2 × (i + 1)).")


def key_legend(labelled: Sequence[tuple[str, str]]) -> str:
    """Markdown list ``label: `key``` after a line on how to read a key."""
    if not labelled:
        return ""
    lines = [key_format(labelled[0][1]) + "\n"] + [f"- {label}: `{key}`" for label, key in labelled]
    return "\n".join(lines) + "\n"


def table_caption(results: Sequence[RetrainResult]) -> str:
    """What the table shows: split, images and their ±, units, how the models were trained."""
    inits = sorted({r.init for r in results})
    how = f"; all {INIT_NAMES.get(inits[0], inits[0])}" if len(inits) == 1 else ""
    return (f"Test split, {images_caption([r.num_examples for r in results])}; accuracies in %, "
            f"PGD columns `pgd<steps>@<epsilon>`{how}.{autoattack_caption(results)}\n")


def autoattack_caption(results: Sequence[RetrainResult]) -> str:
    """`` AutoAttack ran on the first 100 of them (±5.0 points)...`` when it ran on fewer images
    than PGD (pointing to the column of PGD on those images when the results have it); empty otherwise."""
    fewer = sorted({r.autoattack_examples for r in results if r.autoattack is not None
                    and r.autoattack_examples and r.num_examples and r.autoattack_examples < r.num_examples})
    if not fewer:
        return ""
    n = f"{fewer[0]}–{fewer[-1]}" if len(fewer) > 1 else str(fewer[0])
    text = f" AutoAttack ran on the first {n} of them (±{standard_error_points(fewer[0]):.1f} points)"
    if any(r.autoattack_pgd is not None for r in results):
        return text + ", so compare it with the column before it, the grid's PGD at its ε on those same images."
    return text + "."


def labels_from_front(path: str | os.PathLike | None) -> dict[str, str]:
    """Row labels by architecture key from a front-format file's provenance ``label`` (as
    ``python -m workflow lego`` writes ``retrain_front.json``); ``front #k`` otherwise."""
    if path is None:
        return {}
    from search_space.encoding import load_front

    archs, _, _ = load_front(path)
    return {a.key: str(a.provenance.get("label") or f"front #{i + 1}") for i, a in enumerate(archs)}


def gather(paths: Sequence[str | os.PathLike], labels: Mapping[str, str] | None = None
           ) -> tuple[str, str, list[RetrainResult]]:
    """Every ``result.json`` under ``paths`` → (``results.csv`` text, ``results.md`` text, results).

    One row per run (no averaging), in the order of ``labels`` (architecture key → row label,
    e.g. :func:`labels_from_front`), then file order; unlabelled architectures are ``R1``, ``R2``, ...
    """
    results = []
    for p in paths:
        directory, files = result_files(p, "gather")
        results += [read_result(f, directory.name) for f in files]
    order = list(labels or {})
    results.sort(key=lambda r: order.index(r.architecture) if r.architecture in order else len(order))
    names = dict(labels or {})
    for r in results:
        names.setdefault(r.architecture, f"R{sum(k not in order for k in names) + 1}")
    inits = {r.init for r in results}
    seeds = {r.architecture: {x.seed for x in results if x.architecture == r.architecture} for r in results}
    named = []
    for r in results:
        name = names[r.architecture] + (f", {r.init}" if len(inits) > 1 else "")
        named.append((name + (f", seed {r.seed}" if len(seeds[r.architecture]) > 1 else ""), r.evaluation()))
    md = (table_caption(results) + "\n" + robustness_table(named, notation="plain") + "\n"
          + key_legend(list(dict.fromkeys((names[r.architecture], r.architecture) for r in results))))
    rows = [result_row(r, names[r.architecture]) for r in results]
    return csv_text(rows, _columns(rows)), md, results


def _columns(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """``RESULT_COLUMNS``, the accuracies, then the key and folder."""
    keys = list(dict.fromkeys(k for row in rows for k in row))
    return [*RESULT_COLUMNS, *(k for k in keys if k not in (*RESULT_COLUMNS, "architecture", "dir")),
            "architecture", "dir"]
