"""Results analysis of a search and its retrains (paper §IV-B-F: Tables II-XV, Figs. 5-9).

``python -m strategies report --search ID_OR_DIR [--retrain [LABEL=]ID_OR_DIR ...] --out DIR``
writes one self-contained report, ``DIR/report.md`` with its PNGs next to it, and every number
in it as CSV/JSON in the same folder:

==========================  ==================================================================
``front.png``               the first front before retraining (the search's numbers: inherited
                            weights, validation split) and after each retrain (test split):
                            adversarial vs clean error, marker area = parameters, one colour
                            per architecture in every panel (Figs. 6-7); ``front_points.csv``
``front_3d.png``            the same points in 3-D, parameters × adversarial × clean error,
                            one colour per set (Fig. 5: red scratch, blue fine-tune)
``hypervolume.png``         hypervolume per generation (the tuner's ``history.csv``)
``scratch_vs_finetune.csv`` Table X: scratch minus fine-tune, in accuracy points, avg/min/max
                            over the architectures retrained both ways (per architecture in
                            ``scratch_vs_finetune_per_arch.csv``)
``block_stats.csv``         Table XIV / XV counts per layer over the top-k subnets, in the
``ratio_stats.csv``         format :mod:`search_space.legonet` reads (``python -m search_space
                            lego --block-stats ... --ratio-stats ...``); Figs. 8-9 as
                            ``block_stats.png`` / ``ratio_stats.png`` and ``stats_top2.csv``
``legonet.json``            the LegoNet built from those statistics (architecture JSON)
``results.csv``             every retrained architecture in the paper's layout (size, clean,
                            PGD grid); ``best.csv`` one row per retrain set (supernet regime)
``legonet_vs_best.csv``     Table XI: the LegoNet against the best retrained front architecture
``report.json``             summary numbers and the list of files
==========================  ==================================================================

Top-k subnets (paper §IV-F2: "top 10 subnets"): NSGA-II's own survival order over every
architecture the search evaluated (the tuner's saved state; the front alone when there is no
state): lower non-domination rank first, then larger crowding distance. ``--search`` and
``--retrain`` take an nnictl experiment id (looked up in nnictl's registry) or a directory:
an experiment directory, a ``python -m strategies search`` output, the output folder of
``python -m strategies.pipeline`` (its search), or any folder holding ``result.json`` files of
:mod:`trainers.retrain`.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search_space.encoding import (
    BLOCKS,
    NUM_LAYERS,
    RATIOS,
    Architecture,
    ArchitectureError,
    Objective,
    SpaceConfig,
    atomic_write_text,
    load_front,
    save_architecture,
    save_front,
)
from search_space.legonet import StatsTable, count_statistics, legonet, most_frequent, write_stats_csv

from .nsga2 import NSGA2Search, fast_non_dominated_sort, objective_matrix, state_config, survival_select

logger = logging.getLogger(__name__)

DEFAULT_TOP_K = 10  # paper §IV-F2: statistics of the top 10 subnets
# Where NSGA2Tuner saves its state (strategies.tuner.STATE_FILE under NNI's checkpoint folder).
STATE_FILES = ("checkpoint/nsga2_state.json", "nsga2_state.json")
LEGONET = "LegoNet"
FRONT_POINT_COLUMNS = ("panel", "label", "architecture", "params", "adv_error_pct", "clean_error_pct",
                       "marker_size", "colour", "on_front", "rank_in_panel")


class ReportError(ValueError):
    """Bad input to the report; the message names the file, field and value."""


# --------------------------------------------------------------------------- inputs
def resolve_experiment(source: str | os.PathLike, what: str = "--search") -> Path:
    """A directory for ``source``: an existing path (a file stands for its folder) or an nnictl experiment id."""
    path = Path(source)
    if path.exists():
        return path.parent if path.is_file() else path
    text = str(source)
    if re.fullmatch(r"[A-Za-z0-9_-]+", text):
        found = _registry_dir(text)
        if found is not None:
            return found
    raise ReportError(f"{what}: {text!r} is neither a directory nor an experiment id known to nnictl "
                      "(see `nnictl experiment list --all`)")


def _registry_dir(experiment_id: str) -> Path | None:
    from nni.tools.nnictl.config_utils import Experiments

    info = Experiments().get_all_experiments().get(experiment_id)
    candidates = [Path(info["logDir"]) / experiment_id] if info and info.get("logDir") else []
    candidates.append(Path.home() / "nni-experiments" / experiment_id)
    return next((c for c in candidates if c.is_dir()), None)


@dataclass
class SearchRun:
    """What a search left behind: its front, history and (when saved) every evaluated architecture."""

    directory: Path
    name: str
    front: list[Architecture]
    objectives: list[Objective]
    space: SpaceConfig | None
    history: list[dict[str, float]]
    evaluated: list[Architecture]
    evaluated_source: str  # "tuner state <path>" or "front.json"


def load_search(source: str | os.PathLike) -> SearchRun:
    """Read ``front.json``, ``history.csv`` and the tuner state of a search (id or directory)."""
    directory = resolve_experiment(source, "--search")
    pipeline = directory / "pipeline.json"  # a `python -m strategies.pipeline` output: read its search
    if pipeline.exists() and (directory / "nni").is_dir():
        search_id = json.loads(pipeline.read_text()).get("search_id")
        if search_id and (directory / "nni" / search_id).is_dir():
            directory = directory / "nni" / search_id
    front_file = directory / "front.json"
    if not front_file.exists():
        raise ReportError(f"--search: {front_file}: file not found (not a search experiment directory?)")
    front, objectives, space = load_front(front_file)
    meta = json.loads(front_file.read_text())
    name = str(meta.get("experiment_id") or directory.name)
    history = read_history(directory / "history.csv") if (directory / "history.csv").exists() else []
    if not history:
        logger.warning("%s: no history.csv; the report has no hypervolume curve", directory)
    evaluated, evaluated_source = list(front), "front.json"
    for rel in STATE_FILES:
        state_file = directory / rel
        if state_file.exists():
            evaluated = _evaluated_from_state(state_file)
            evaluated_source = f"tuner state {rel}"
            break
    else:
        logger.warning("%s: no tuner state (%s); top-k statistics use the front only",
                       directory, " or ".join(STATE_FILES))
    return SearchRun(directory, name, front, objectives, space, history, evaluated, evaluated_source)


def read_history(path: str | os.PathLike) -> list[dict[str, float]]:
    """Rows of the tuner's ``history.csv`` (generation, evaluations, failures, front_size, hypervolume)."""
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = {"generation", "hypervolume"} - set(reader.fieldnames or [])
        if missing:
            raise ReportError(f"{path}: missing column(s) {sorted(missing)} (header {reader.fieldnames})")
        rows = []
        for line, row in enumerate(reader, start=2):
            out: dict[str, float] = {}
            for key, value in row.items():
                try:
                    out[key] = int(value) if key != "hypervolume" else float(value)
                except (TypeError, ValueError):
                    raise ReportError(f"{path}:{line}: {key} {value!r} is not a number") from None
            rows.append(out)
    return rows


def _evaluated_from_state(path: Path) -> list[Architecture]:
    try:
        state = json.loads(path.read_text())
        state_config(state)
        search = NSGA2Search.from_state(state)
    except (json.JSONDecodeError, KeyError, TypeError, ValueError) as e:
        raise ReportError(f"{path}: not a readable NSGA-II state ({e})") from None
    keys = sorted(search.results, key=lambda k: (search.born.get(k, 0), k))
    out = []
    for k in keys:
        arch = Architecture.from_key(k)
        prov = {"generation": search.born.get(k), **search.provenance.get(k, {})}
        out.append(Architecture(arch.blocks, arch.ratios, dict(search.results[k]), prov))
    return out


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

    @property
    def set_name(self) -> str:
        return f"{self.set_label} ({self.init})"

    def metrics(self) -> dict[str, float]:
        """Accuracies by column name: ``clean_acc``, ``pgd{steps}_eps{label}`` (as ``gather``), ``autoattack``."""
        out = {"clean_acc": self.clean_acc}
        out.update({metric_key(s, lab): acc for s, _, lab, acc in self.pgd})
        if self.autoattack is not None:
            out["autoattack"] = self.autoattack
        return out

    def evaluation(self) -> dict[str, Any]:
        """The shape :func:`trainers.evaluation.robustness_table` renders."""
        return {"params": self.params, "clean_acc": self.clean_acc,
                "pgd": [{"steps": s, "epsilon": e, "epsilon_label": lab, "acc": a} for s, e, lab, a in self.pgd],
                "autoattack": ({"epsilon": max((e for _, e, _, _ in self.pgd), default=0.0),
                                "acc": self.autoattack} if self.autoattack is not None else None)}


def metric_key(steps: int, epsilon_label: str) -> str:
    return f"pgd{steps}_eps{epsilon_label}"


def metric_title(key: str) -> str:
    """Column title in the paper's notation (``$P^{10}_{8/255}$``)."""
    m = re.fullmatch(r"pgd(\d+)_eps(.+)", key)
    if m:
        return f"$P^{{{m.group(1)}}}_{{{m.group(2)}}}$"
    return {"clean_acc": "Clean", "autoattack": "AA"}.get(key, key)


def _number(d: Mapping[str, Any], key: str, where: str, *, optional: bool = False) -> float | None:
    if key not in d or d[key] is None:
        if optional:
            return None
        raise ReportError(f"{where}: field {key!r} missing")
    v = d[key]
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ReportError(f"{where}.{key}: {v!r} is not a number")
    return float(v)


def read_result(path: str | os.PathLike, set_label: str) -> RetrainResult:
    """One ``result.json`` of :func:`trainers.retrain.retrain`; errors name the file and field."""
    path = Path(path)
    try:
        r = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ReportError(f"{path}: not valid JSON ({e})") from None
    if not isinstance(r, dict):
        raise ReportError(f"{path}: expected a JSON object, got {type(r).__name__}")
    for key in ("architecture", "init", "test"):
        if key not in r:
            raise ReportError(f"{path}: field {key!r} missing")
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
        label = rec.get("epsilon_label") or _epsilon_label(eps)
        pgd.append((int(_number(rec, "steps", where)), eps, str(label), _number(rec, "acc", where)))
    aa = test.get("autoattack")
    return RetrainResult(
        set_label=set_label, init=str(r["init"]), architecture=key,
        params=int(_number(r, "params", str(path))), clean_acc=_number(r, "clean_acc", str(path)),
        adv_acc=_number(r, "adv_acc", str(path), optional=True), pgd=tuple(sorted(pgd)),
        autoattack=_number(aa, "acc", f"{path}.test.autoattack") if isinstance(aa, Mapping) else None,
        sources=(str(path.parent),))


def _epsilon_label(epsilon: float) -> str:
    from trainers.evaluation import epsilon_label

    return epsilon_label(epsilon)


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
    path = Path(source)
    if path.is_file():  # one result.json
        files, directory = [path], path.parent
    else:
        directory = resolve_experiment(source, "--retrain")
        files = sorted(directory.rglob("result.json"))
    if not files:
        raise ReportError(f"--retrain: no result.json under {directory}")
    label = label or directory.name
    return aggregate([read_result(f, label) for f in files])


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
        aas = [r.autoattack for r in rs if r.autoattack is not None]
        out.append(RetrainResult(label, init, key, rs[0].params, float(np.mean([r.clean_acc for r in rs])),
                                 float(np.mean(advs)) if advs else None, pgd,
                                 float(np.mean(aas)) if len(aas) == len(rs) else None, len(rs),
                                 tuple(s for r in rs for s in r.sources)))
        logger.info("%s (%s): %s averaged over %d runs", label, init, key, len(rs))
    return out


# --------------------------------------------------------------------------- statistics, LegoNet
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
    from search_space.params import count_params

    lego = Architecture(built.blocks, built.ratios, {"params": float(count_params(built, space))},
                        {"built_by": "legonet", "search": search.name, "top_k": len(top),
                         "selection": "NSGA-II rank, then crowding distance", "source": search.evaluated_source})
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
    _write_csv(out / "stats_top2.csv", rows)
    save_front(out / "topk.json", stats.top, search.objectives, search.space, source=str(search.directory),
               selection=f"top {stats.k} by NSGA-II rank, then crowding distance ({stats.source})")
    save_architecture(stats.legonet, out / "legonet.json", search.space)
    return ["block_stats.csv", "ratio_stats.csv", "stats_top2.csv", "topk.json", "legonet.json"]


def write_retrain_front(search: SearchRun, lego: Architecture, front_top: int, path: Path) -> list[Architecture]:
    """A front-format file: the first ``front_top`` front architectures plus the LegoNet (once).

    ``python -m trainers.retrain space PATH`` turns it into the retrain experiment's search space.
    """
    archs = list(search.front[:front_top])
    if lego.key not in {a.key for a in archs}:
        archs.append(lego)
    save_front(path, archs, search.objectives, search.space, source=str(search.directory),
               selection=f"first {front_top} front architecture(s) + LegoNet")
    return archs


# --------------------------------------------------------------------------- comparisons
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


# --------------------------------------------------------------------------- the report
@dataclass
class Report:
    """Where the report went and the numbers it holds (``report.json``)."""

    out: Path
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)  # name -> matplotlib Figure (tests read them)


def _letters(i: int) -> str:
    s = ""
    i += 1
    while i:
        i, r = divmod(i - 1, 26)
        s = chr(65 + r) + s
    return s


def architecture_labels(front: Sequence[Architecture], others: Iterable[str], lego_key: str | None) -> dict[str, str]:
    """A, B, ... for the front (file order), ``LegoNet``, then R1, R2, ... for other retrained keys."""
    labels = {a.key: _letters(i) for i, a in enumerate(front)}
    if lego_key is not None:
        labels[lego_key] = LEGONET if lego_key not in labels else f"{labels[lego_key]} = {LEGONET}"
    n = 0
    for key in others:
        if key not in labels:
            n += 1
            labels[key] = f"R{n}"
    return labels


def _write_csv(path: Path, rows: Sequence[Mapping[str, Any]], columns: Sequence[str] | None = None) -> None:
    columns = list(columns or dict.fromkeys(k for row in rows for k in row))
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows([{c: _csv_value(row.get(c, "")) for c in columns} for row in rows])
    atomic_write_text(path, buf.getvalue())


def _csv_value(v: Any) -> Any:
    return repr(v) if isinstance(v, float) else ("" if v is None else v)


def _md_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def _fmt(v: float | None, digits: int = 2) -> str:
    return "–" if v is None or (isinstance(v, float) and math.isnan(v)) else f"{v:.{digits}f}"


def _errors_pct(acc: float) -> float:
    return 100.0 * (1.0 - float(acc))


def write_report(search: SearchRun, retrains: Sequence[RetrainResult], out: str | os.PathLike, *,
                 top_k_count: int = DEFAULT_TOP_K, lego: Architecture | None = None) -> Report:
    """Compute every table and figure and write the report into ``out`` (see the module docstring)."""
    from trainers.evaluation import robustness_table

    from . import report_plots as plots

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(out)
    md: list[str] = [f"# TAM-NAS analysis report: search `{search.name}`\n"]
    space = search.space.to_dict() if search.space else "not recorded"
    md.append(f"Search directory `{search.directory}`; space {space}; objectives "
              + ", ".join(f"{o.name} ({o.direction})" for o in search.objectives)
              + f"; {len(search.evaluated)} architectures evaluated ({search.evaluated_source}); "
              f"first front of {len(search.front)}.\n")

    stats = search_statistics(search, top_k_count)
    rep.files += write_statistics(stats, search, out)
    lego_arch = lego or stats.legonet
    sets = retrain_sets(retrains)
    labels = architecture_labels(search.front, (r.architecture for r in retrains), lego_arch.key)
    front_keys = {a.key for a in search.front}

    # ---- architectures
    md.append("## Architectures\n")
    arch_rows = [{"label": labels[a.key], "architecture": a.key, "on_front": True,
                  "params": a.objectives.get("params"), "layers": a.describe()} for a in search.front]
    arch_rows.append({"label": LEGONET, "architecture": lego_arch.key, "on_front": lego_arch.key in front_keys,
                      "params": lego_arch.objectives.get("params"), "layers": lego_arch.describe()})
    arch_rows += [{"label": labels[k], "architecture": k, "on_front": False, "params": "",
                   "layers": Architecture.from_key(k).describe()}
                  for k in dict.fromkeys(r.architecture for r in retrains)
                  if k not in front_keys and k != lego_arch.key]
    _write_csv(out / "architectures.csv", arch_rows)
    rep.files.append("architectures.csv")
    md.append("Labels used in every figure and table (layers: `layer:block x ratio`); all in "
              "[architectures.csv](architectures.csv).\n")
    md.append(_md_table(["Label", "Architecture key", "Params"],
                        [[r["label"], f"`{r['architecture']}`", _size(r["params"])] for r in arch_rows]))

    # ---- fronts before / after retraining (Figs. 5-7)
    colours = plots.architecture_colours([a.key for a in search.front]
                                         + [lego_arch.key] + [r.architecture for r in retrains])
    panels: list[tuple[str, str, list[plots.Point], str]] = []  # (series, panel title, points, init)
    if all(o in {x.name for x in search.objectives} for o in ("adv_acc", "clean_acc")):
        before = [plots.Point(labels[a.key], a.key, float(a.objectives["params"]) if "params" in a.objectives
                              else float(_count_params(a, search.space)),
                              _errors_pct(a.objectives["adv_acc"]), _errors_pct(a.objectives["clean_acc"]),
                              colours[a.key], True) for a in search.front]
        panels.append(("search (supernet weights)",
                       "before retraining: search (supernet weights, validation)", before, "search"))
    else:
        logger.warning("the search's objectives %s have no adv_acc/clean_acc: no 'before retraining' panel",
                       [o.name for o in search.objectives])
    for name, rs in sets.items():
        pts = [plots.Point(labels[r.architecture], r.architecture, float(r.params), _errors_pct(r.adv_acc),
                           _errors_pct(r.clean_acc), colours[r.architecture], r.architecture in front_keys)
               for r in rs if r.adv_acc is not None]
        panels.append((name, f"after retraining: {name} (test)", pts, rs[0].init))
    point_rows = []
    max_params = max((p.params for _, _, pts, _ in panels for p in pts), default=1.0)
    for series, _, pts, _ in panels:
        for p, rank in zip(pts, _ranks(pts), strict=True):
            point_rows.append({"panel": series, "label": p.label, "architecture": p.architecture,
                               "params": p.params, "adv_error_pct": p.adv_error, "clean_error_pct": p.clean_error,
                               "marker_size": plots.marker_size(p.params, max_params), "colour": p.colour,
                               "on_front": p.on_front, "rank_in_panel": rank})
    _write_csv(out / "front_points.csv", point_rows, FRONT_POINT_COLUMNS)
    rep.files.append("front_points.csv")
    if panels:
        fig = plots.front_figure([(title, pts) for _, title, pts, _ in panels], max_params)
        plots.save_figure(fig, out / "front.png")
        fig3 = plots.front_3d_figure([(series, pts) for series, _, pts, _ in panels],
                                     plots.series_colours([(series, init) for series, _, _, init in panels]))
        plots.save_figure(fig3, out / "front_3d.png")
        rep.figures.update(front=fig, front_3d=fig3)
        rep.files += ["front.png", "front_3d.png"]
        md.append("## First front before and after retraining (Figs. 5-7)\n")
        md.append("Adversarial error vs clean error; marker area = parameters; the same colour is the same "
                  "architecture in every panel; stars are not on the searched front (LegoNet). Before "
                  "retraining: the search's numbers (weights inherited from the supernet, validation split); "
                  "after: the retrained model on the test split. `rank_in_panel` in "
                  "[front_points.csv](front_points.csv) is the non-domination rank within the panel "
                  "(adversarial error, clean error, parameters).\n")
        md.append("![first front](front.png)\n\n![3-D view](front_3d.png)\n")

    # ---- hypervolume
    if search.history:
        gens = [int(h["generation"]) for h in search.history]
        hvs = [float(h["hypervolume"]) for h in search.history]
        fig = plots.hypervolume_figure(gens, hvs)
        plots.save_figure(fig, out / "hypervolume.png")
        _write_csv(out / "hypervolume.csv", search.history)
        rep.figures["hypervolume"] = fig
        rep.files += ["hypervolume.png", "hypervolume.csv"]
        md.append("## Hypervolume per generation\n")
        md.append("![hypervolume](hypervolume.png)\n")
        md.append(_md_table(["Generation", "Evaluations", "Front size", "Hypervolume"],
                            [[int(h["generation"]), int(h.get("evaluations", 0)), int(h.get("front_size", 0)),
                              f"{h['hypervolume']:.6g}"] for h in search.history]))

    # ---- scratch vs fine-tune (Table X)
    x_rows, x_arch_rows = [], []
    for pair, s_rs, f_rs in scratch_finetune_pairs(sets):
        metrics, per_arch, summary = scratch_vs_finetune(s_rs, f_rs)
        x_rows += [{"pair": pair, "metric": m, **summary[m]} for m in metrics]
        x_arch_rows += [{"pair": pair, "label": labels[r["architecture"]], **r} for r in per_arch]
    if x_rows:
        _write_csv(out / "scratch_vs_finetune.csv", x_rows)
        _write_csv(out / "scratch_vs_finetune_per_arch.csv", x_arch_rows)
        rep.files += ["scratch_vs_finetune.csv", "scratch_vs_finetune_per_arch.csv"]
        md.append("## Training from scratch vs fine-tuning (Table X)\n")
        md.append(_table_x(x_rows))
        md.append("Scratch minus fine-tune in accuracy points over the architectures retrained both ways "
                  "(columns as in the paper: clean and PGD with the fewest steps; every grid cell in "
                  "[scratch_vs_finetune.csv](scratch_vs_finetune.csv), per architecture in "
                  "[scratch_vs_finetune_per_arch.csv](scratch_vs_finetune_per_arch.csv)).\n")
    elif retrains:
        md.append("## Training from scratch vs fine-tuning (Table X)\n")
        md.append("Not available: no architecture was retrained both from scratch and fine-tuned "
                  "(pass both retrain experiments to `--retrain`).\n")

    # ---- block and ratio statistics (Tables XIV-XV, Figs. 8-9)
    tops = {"block": [most_frequent(c, 2) for c in stats.blocks], "ratio": [most_frequent(c, 2) for c in stats.ratios]}
    fig_b = plots.statistics_figure(stats.blocks, tops["block"], title=f"Block statistics of the top {stats.k}",
                                    id_name="block id", tick_labels=[f"{b.id} {b.short}" for b in BLOCKS])
    fig_r = plots.statistics_figure(stats.ratios, tops["ratio"], title=f"Ratio statistics of the top {stats.k}",
                                    id_name="channel ratio", tick_labels=[f"{i}: {r:.1f}" for i, r in enumerate(RATIOS)])
    plots.save_figure(fig_b, out / "block_stats.png")
    plots.save_figure(fig_r, out / "ratio_stats.png")
    rep.figures.update(block_stats=fig_b, ratio_stats=fig_r)
    rep.files += ["block_stats.png", "ratio_stats.png"]
    md.append(f"## Block and channel statistics of the top {stats.k} subnets (Tables XIV-XV, Figs. 8-9)\n")
    md.append(f"Top {stats.k} of {len(search.evaluated)} evaluated architectures ({stats.source}) in NSGA-II's "
              "survival order (non-domination rank, then crowding distance): [topk.json](topk.json). Counts "
              "per layer in the LegoNet builder's format: [block_stats.csv](block_stats.csv), "
              "[ratio_stats.csv](ratio_stats.csv) (`python -m search_space lego --block-stats block_stats.csv "
              "--ratio-stats ratio_stats.csv` rebuilds [legonet.json](legonet.json)); the two most frequent per "
              "layer in [stats_top2.csv](stats_top2.csv).\n")
    md.append("![block statistics](block_stats.png)\n\n![ratio statistics](ratio_stats.png)\n")
    md.append(_md_table(["Layer", "Blocks (count)", "Ratios (count)", f"{LEGONET} block", f"{LEGONET} ratio"], [
        [layer, ", ".join(f"{i} {BLOCKS[i].short} ({stats.blocks[layer][i]})" for i in tops["block"][layer]),
         ", ".join(f"{RATIOS[i]:.1f} ({stats.ratios[layer][i]})" for i in tops["ratio"][layer]),
         f"{stats.legonet.blocks[layer]} {BLOCKS[stats.legonet.blocks[layer]].short}",
         f"{stats.legonet.ratios[layer]:.1f}"] for layer in range(NUM_LAYERS)]))

    # ---- result tables (paper layout) and LegoNet vs best (Table XI)
    if retrains:
        result_rows, named = [], []
        for name, rs in sets.items():
            for r in rs:
                result_rows.append(_result_row(r, labels[r.architecture]))
                named.append((f"{name}: {labels[r.architecture]}", r.evaluation()))
        _write_csv(out / "results.csv", result_rows)
        best_rows, best_named = [], []
        for name, rs in sets.items():
            b = best_result(rs)
            best_rows.append(_result_row(b, labels[b.architecture]))
            best_named.append((f"{name}: {labels[b.architecture]}", b.evaluation()))
        _write_csv(out / "best.csv", best_rows)
        rep.files += ["results.csv", "best.csv"]
        md.append("## Results in the paper's layout (Tables II-IX)\n")
        md.append("Best retrained architecture of each retrain set (one row per supernet regime; highest "
                  "adversarial accuracy, then clean accuracy), accuracies in % on the test split "
                  "([best.csv](best.csv)):\n\n")
        md.append(robustness_table(best_named))
        md.append("\nEvery retrained architecture ([results.csv](results.csv)):\n\n")
        md.append(robustness_table(named))
        xi_rows, xi_named, xi_text = [], [], []
        for name, rs in sets.items():
            lego_r = next((r for r in rs if r.architecture == lego_arch.key), None)
            others = [r for r in rs if r.architecture != lego_arch.key and r.architecture in front_keys] or [
                r for r in rs if r.architecture != lego_arch.key]
            if lego_r is None or not others:
                continue
            b = best_result(others)
            xi_named += [(f"{name}: {LEGONET}", lego_r.evaluation()),
                         (f"{name}: best front architecture {labels[b.architecture]}", b.evaluation())]
            lm, bm = lego_r.metrics(), b.metrics()
            xi_text.append(f"- {name}: {LEGONET} minus {labels[b.architecture]}: clean "
                           f"{100 * (lm['clean_acc'] - bm['clean_acc']):+.2f} points, adversarial "
                           + (f"{100 * (lego_r.adv_acc - b.adv_acc):+.2f} points"
                              if lego_r.adv_acc is not None and b.adv_acc is not None else "–")
                           + f", size {100 * (lego_r.params - b.params) / b.params:+.2f} %")
            xi_rows += [{"set": name, "row": LEGONET, **_result_row(lego_r, LEGONET)},
                        {"set": name, "row": "best front", **_result_row(b, labels[b.architecture])},
                        {"set": name, "row": "difference (points; params %)", "label": "", "architecture": "",
                         "params": 100.0 * (lego_r.params - b.params) / b.params,
                         "adv_acc": (100.0 * (lego_r.adv_acc - b.adv_acc)
                                     if lego_r.adv_acc is not None and b.adv_acc is not None else None),
                         **{m: 100.0 * (lm[m] - bm[m]) for m in lm if m in bm}}]
        md.append(f"## {LEGONET} vs the best front architecture (Table XI)\n")
        if xi_rows:
            _write_csv(out / "legonet_vs_best.csv", xi_rows)
            rep.files.append("legonet_vs_best.csv")
            md.append(robustness_table(xi_named))
            md.append("\n" + "\n".join(xi_text) + "\n\nEvery grid cell's difference (accuracy points; size in %) "
                      "in [legonet_vs_best.csv](legonet_vs_best.csv). The adversarial accuracy is the retrain's "
                      "headline PGD number (training ε, fewest steps).\n")
        else:
            md.append(f"Not available: no retrain set holds both the {LEGONET} (`{lego_arch.key}`) and a front "
                      "architecture. Retrain it with `python -m strategies lego --search ... --front-top N` "
                      "(see README).\n")

    rep.summary = {
        "search": {"name": search.name, "directory": str(search.directory),
                   "space": search.space.to_dict() if search.space else None,
                   "objectives": [{"name": o.name, "direction": o.direction} for o in search.objectives],
                   "evaluated": len(search.evaluated), "evaluated_source": search.evaluated_source,
                   "front_size": len(search.front),
                   "final_hypervolume": search.history[-1]["hypervolume"] if search.history else None},
        "top_k": stats.k,
        "legonet": {"architecture": lego_arch.key, "params": lego_arch.objectives.get("params"),
                    "from_statistics": lego is None},
        "labels": labels,
        "retrain_sets": {name: {"init": rs[0].init, "architectures": len(rs),
                                "best": best_result(rs).architecture} for name, rs in sets.items()},
        "scratch_vs_finetune": x_rows,
    }
    rep.files += ["report.md", "report.json"]
    atomic_write_text(out / "report.json", json.dumps({**rep.summary, "files": rep.files}, indent=2) + "\n")
    md.append("## Files\n")
    md.append("\n".join(f"- [{f}]({f})" for f in rep.files) + "\n")
    atomic_write_text(out / "report.md", "\n".join(md))
    logger.info("report of %s written to %s (%d files)", search.name, out, len(rep.files))
    return rep


def _count_params(arch: Architecture, space: SpaceConfig | None) -> int:
    from search_space.params import count_params

    return count_params(arch, space or SpaceConfig())


def _size(params: Any) -> str:
    if params in (None, ""):
        return "–"
    p = float(params)
    return f"{p / 1e6:.4f}M" if p >= 1e6 else f"{p / 1e3:.1f}K"


def _ranks(points: Sequence[Any]) -> list[int]:
    if not points:
        return []
    F = np.array([[p.adv_error, p.clean_error, p.params] for p in points], dtype=float)
    ranks = [0] * len(points)
    for r, front in enumerate(fast_non_dominated_sort(F)):
        for i in front:
            ranks[int(i)] = r
    return ranks


def _result_row(r: RetrainResult, label: str) -> dict[str, Any]:
    return {"set": r.set_name, "label": label, "architecture": r.architecture, "init": r.init, "runs": r.runs,
            "params": r.params, "adv_acc": r.adv_acc, **r.metrics()}


def _table_x(rows: Sequence[Mapping[str, Any]]) -> str:
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
        cells = [_fmt(ms[m][s]) if m in ms else "–" for m in shown for s in ("avg", "min", "max")]
        body.append([pair, *cells, next(iter(ms.values()))["n"]])
    return _md_table(header, body)


__all__ = [
    "DEFAULT_TOP_K", "ReportError", "RetrainResult", "SearchRun", "Statistics", "aggregate", "best_result",
    "load_retrain", "load_search", "read_history", "read_result", "resolve_experiment", "scratch_finetune_pairs",
    "scratch_vs_finetune",
    "search_statistics", "top_k", "write_report", "write_retrain_front", "write_statistics",
]
