"""Results analysis of a search and its retrains (paper §IV-B-F: Tables II-XV, Figs. 5-9).

``python -m workflow report --search ID_OR_DIR [--retrain [LABEL=]ID_OR_DIR ...] --out DIR``
writes one self-contained report, ``DIR/report.md`` with its PNGs next to it, and every number
in it as CSV/JSON in the same folder:

==========================  ==================================================================
``architectures.csv``       every labelled architecture, its key, size and why it was retrained
``front.png``               the first front before retraining (the search's numbers: inherited
                            weights, validation split) and after each retrain (test split):
                            adversarial vs clean error on one scale, marker area = parameters
                            (size legend), one colour per architecture in every panel
                            (Figs. 6-7); ``front_points.csv``
``front_3d.png``            the same points in 3-D, parameters × adversarial × clean error,
                            labelled, one colour per set (Fig. 5: red scratch, blue fine-tune)
``front_pairs.png``         only for more than three objectives (e.g. ``flops:min``): the front
                            on every pair of objectives
``hypervolume.png``         hypervolume per generation (the tuner's ``history.csv``)
``scratch_vs_finetune.csv`` Table X: scratch minus fine-tune, in accuracy points, avg/min/max
                            over the architectures retrained both ways (per architecture in
                            ``scratch_vs_finetune_per_arch.csv``)
``block_stats.csv``         Table XIV / XV counts per layer over the top-k subnets, in the
``ratio_stats.csv``         format :mod:`search_space.legonet` reads (``python -m workflow lego
                            --block-stats ... --ratio-stats ...``); Figs. 8-9 as
                            ``block_stats.png`` / ``ratio_stats.png`` and ``stats_top2.csv``
``legonet.json``            the LegoNet built from those statistics (architecture JSON)
``results.csv``             every retrained architecture (size, clean, PGD grid);
                            ``best.csv`` one row per retrain set (supernet regime)
``legonet_vs_best.csv``     Table XI: the LegoNet against the best retrained front architecture
``ranking.csv``             Kendall τ per retrain set and objective between the search's score
                            and the retrain's (``ranking_points.csv``: the pairs); ``ranking.png``
                            the scatter plot, search score vs retrain score per objective
``report.json``             summary numbers and the list of files
==========================  ==================================================================

Inputs: :mod:`workflow.search` (``--search``) and :mod:`workflow.results` (``--retrain``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from search_space.encoding import BLOCKS, NUM_LAYERS, RATIOS, Architecture, SpaceConfig, atomic_write_text
from search_space.legonet import most_frequent
from strategies.operators import fast_non_dominated_sort
from trainers.tables import robustness_table

from . import plots
from .choice import DEFAULT_ROLES, LEGONET, LEGONET_WHY, ROLES, architecture_labels, reasons
from .compare import best_result, retrain_sets, scratch_finetune_pairs, scratch_vs_finetune, table_x
from .output import md_table, size, write_csv
from .results import INIT_NAMES, RetrainResult, key_format, result_row, table_caption
from .search import SearchRun
from .statistics import DEFAULT_TOP_K, SELECTION, Statistics, search_statistics, write_statistics

logger = logging.getLogger(__name__)

FRONT_POINT_COLUMNS = ("panel", "label", "architecture", "params", "adv_error_pct", "clean_error_pct",
                       "marker_size", "colour", "on_front", "rank_in_panel")


@dataclass
class Report:
    """Where the report went and the numbers it holds (``report.json``)."""

    out: Path
    summary: dict[str, Any] = field(default_factory=dict)
    files: list[str] = field(default_factory=list)
    figures: dict[str, Any] = field(default_factory=dict)  # name -> matplotlib Figure (tests read them)


@dataclass
class _Build:
    """Everything the sections share while the report is written."""

    search: SearchRun
    retrains: Sequence[RetrainResult]
    rep: Report
    stats: Statistics
    lego: Architecture
    sets: dict[str, list[RetrainResult]]
    labels: dict[str, str]
    md: list[str] = field(default_factory=list)

    @property
    def out(self) -> Path:
        return self.rep.out

    @property
    def front_keys(self) -> set[str]:
        return {a.key for a in self.search.front}

    def csv(self, name: str, rows: Sequence[dict[str, Any]], columns: Sequence[str] | None = None) -> None:
        write_csv(self.out / name, rows, columns)
        self.rep.files.append(name)

    def figure(self, name: str, fig: Any) -> None:
        plots.save_figure(fig, self.out / f"{name}.png")
        self.rep.figures[name] = fig
        self.rep.files.append(f"{name}.png")


def write_report(search: SearchRun, retrains: Sequence[RetrainResult], out: str | os.PathLike, *,
                 top_k_count: int = DEFAULT_TOP_K, lego: Architecture | None = None) -> Report:
    """Compute every table and figure and write the report into ``out`` (see the module docstring)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rep = Report(out)
    stats = search_statistics(search, top_k_count)
    rep.files += write_statistics(stats, search, out)
    lego_arch = lego or stats.legonet
    labels = architecture_labels(search.front, (r.architecture for r in retrains), lego_arch.key)
    b = _Build(search, retrains, rep, stats, lego_arch, retrain_sets(retrains), labels)
    _intro(b)
    for section in (_architectures, _fronts, _pairwise, _hypervolume, _scratch_vs_finetune, _statistics, _results,
                    _ranking, _legonet_vs_best):
        section(b)
    _finish(b)
    logger.info("report of %s written to %s (%d files)", search.name, out, len(rep.files))
    return rep


def _intro(b: _Build) -> None:
    s = b.search
    space = s.space.to_dict() if s.space else "not recorded"
    b.md.append(f"# TAM-NAS analysis report: search `{s.name}`\n")
    b.md.append(f"Search directory `{s.directory}`; space {space}; objectives "
                + ", ".join(f"{o.name} ({o.direction})" for o in s.objectives)
                + f"; {len(s.evaluated)} architectures evaluated ({s.evaluated_source}); "
                f"first front of {len(s.front)}.\n")


def _architectures(b: _Build) -> None:
    """The label of every architecture, its key, size and why it was retrained."""
    why = reasons(b.search.front)
    retrained_in = {k: [name for name, rs in b.sets.items() if any(r.architecture == k for r in rs)]
                    for k in b.labels}
    lego_why = LEGONET_WHY.replace("top-k", f"top {b.stats.k}")
    rows = [{"label": b.labels[a.key], "architecture": a.key, "on_front": True,
             "params": a.objectives.get("params"), "why": why.get(a.key, ""), "layers": a.describe()}
            for a in b.search.front]
    if b.lego.key in b.front_keys:
        rows[[a.key for a in b.search.front].index(b.lego.key)]["why"] += f"; also the {LEGONET}"
    else:
        rows.append({"label": LEGONET, "architecture": b.lego.key, "on_front": False,
                     "params": b.lego.objectives.get("params"), "why": lego_why, "layers": b.lego.describe()})
    rows += [{"label": b.labels[k], "architecture": k, "on_front": False, "params": "", "why": "given to the report",
              "layers": Architecture.from_key(k).describe()}
             for k in dict.fromkeys(r.architecture for r in b.retrains) if k not in b.front_keys and k != b.lego.key]
    for r in rows:
        r["retrained_in"] = "; ".join(retrained_in.get(r["architecture"], []))
    b.csv("architectures.csv", rows)
    roles = ", ".join(ROLES[r].short for r in DEFAULT_ROLES)
    b.md.append("## Architectures\n")
    b.md.append(f"Labels used in every figure and table: `front #k` is the k-th architecture of the search's "
                f"front.json; its roles ({roles}) are computed from the search's numbers (inherited weights, "
                f"validation split); 'Retrained in' names the retrains that hold each one (`make demo` retrains the "
                f"best under attack; `workflow lego --pick` chooses the roles, and adds the {LEGONET} unless "
                "--without-legonet). "
                f"{key_format(rows[0]['architecture'])} Per-layer names in "
                "[architectures.csv](architectures.csv).\n")
    b.md.append(md_table(["Label", "Architecture key", "Params", "Why chosen", "Retrained in"],
                         [[r["label"], f"`{r['architecture']}`", size(r["params"]), r["why"] or "–",
                           r["retrained_in"] or "–"] for r in rows]))


def _errors_pct(acc: float) -> float:
    return 100.0 * (1.0 - float(acc))


def _count_params(arch: Architecture, space: SpaceConfig | None) -> int:
    from search_space.params import count_params

    return count_params(arch, space or SpaceConfig())


def _panel_titles(b: _Build) -> dict[str, str]:
    """``after retraining: fine-tuned from the supernet (test split)``; the set's label only where
    two sets were trained the same way (never an experiment id alone)."""
    inits = [rs[0].init for rs in b.sets.values()]
    titles = {}
    for name, rs in b.sets.items():
        init = rs[0].init
        which = f", {rs[0].set_label}" if inits.count(init) > 1 else ""
        titles[name] = f"after retraining: {INIT_NAMES.get(init, init)}{which} (test split)"
    return titles


def _panels(b: _Build) -> list[tuple[str, str, list[plots.Point], str]]:
    """(series, panel title, points, init) of the search's front and of every retrain set."""
    colours = plots.architecture_colours([a.key for a in b.search.front] + [b.lego.key]
                                         + [r.architecture for r in b.retrains])
    panels = []
    if all(o in {x.name for x in b.search.objectives} for o in ("adv_acc", "clean_acc")):
        before = [plots.Point(b.labels[a.key], a.key, float(a.objectives["params"]) if "params" in a.objectives
                              else float(_count_params(a, b.search.space)),
                              _errors_pct(a.objectives["adv_acc"]), _errors_pct(a.objectives["clean_acc"]),
                              colours[a.key], True) for a in b.search.front]
        panels.append(("search (supernet weights)",
                       "before retraining: search (supernet weights, validation split)", before, "search"))
    else:
        logger.warning("the search's objectives %s have no adv_acc/clean_acc: no 'before retraining' panel",
                       [o.name for o in b.search.objectives])
    titles = _panel_titles(b)
    for name, rs in b.sets.items():
        pts = [plots.Point(b.labels[r.architecture], r.architecture, float(r.params), _errors_pct(r.adv_acc),
                           _errors_pct(r.clean_acc), colours[r.architecture], r.architecture in b.front_keys)
               for r in rs if r.adv_acc is not None]
        panels.append((name, titles[name], pts, rs[0].init))
    return panels


def _ranks(points: Sequence[plots.Point]) -> list[int]:
    if not points:
        return []
    F = np.array([[p.adv_error, p.clean_error, p.params] for p in points], dtype=float)
    ranks = [0] * len(points)
    for r, front in enumerate(fast_non_dominated_sort(F)):
        for i in front:
            ranks[int(i)] = r
    return ranks


def _fronts(b: _Build) -> None:
    """Figs. 5-7: the front before and after retraining, 2-D panels on one scale and the 3-D view."""
    panels = _panels(b)
    max_params = max((p.params for _, _, pts, _ in panels for p in pts), default=1.0)
    b.csv("front_points.csv", [
        {"panel": series, "label": p.label, "architecture": p.architecture, "params": p.params,
         "adv_error_pct": p.adv_error, "clean_error_pct": p.clean_error,
         "marker_size": plots.marker_size(p.params, max_params), "colour": p.colour, "on_front": p.on_front,
         "rank_in_panel": rank}
        for series, _, pts, _ in panels for p, rank in zip(pts, _ranks(pts), strict=True)], FRONT_POINT_COLUMNS)
    if not panels:
        return
    b.figure("front", plots.front_figure([(title, pts) for _, title, pts, _ in panels], max_params))
    b.figure("front_3d", plots.front_3d_figure(
        [(series, pts) for series, _, pts, _ in panels],
        plots.series_colours([(series, init) for series, _, _, init in panels])))
    b.md.append("## First front before and after retraining (Figs. 5-7)\n")
    b.md.append("Adversarial error vs clean error, every panel on the same scale: a point's move between "
                "panels is what retraining changed. Marker area = parameters (legend below the panels; all "
                "sizes are drawn from 0, so similar models look alike); the same colour is the same "
                "architecture in every panel; `#k` is `front #k`; stars are not on the searched front "
                "(LegoNet). Before retraining: the search's numbers (weights inherited from the supernet, "
                "validation split); after: the retrained model on the test split. `rank_in_panel` in "
                "[front_points.csv](front_points.csv) is the non-domination rank within the panel "
                "(adversarial error, clean error, parameters).\n")
    b.md.append("![first front](front.png)\n\n![3-D view](front_3d.png)\n")


def _pairwise(b: _Build) -> None:
    """A search with more than three objectives (e.g. flops:min): its front on every pair of them."""
    objectives = b.search.objectives
    if len(objectives) <= 3 or not b.search.front:
        return
    front = b.search.front
    colours = plots.architecture_colours([a.key for a in front])
    b.figure("front_pairs", plots.pairwise_figure(
        [a.objectives for a in front], [(o.name, o.direction) for o in objectives],
        [b.labels[a.key] for a in front], [colours[a.key] for a in front]))
    b.md.append("## The front on every pair of objectives\n")
    b.md.append(f"The search optimised {len(objectives)} objectives; each panel is one pair (the search's "
                "numbers: inherited weights, validation split).\n\n![pairs](front_pairs.png)\n")


def _hypervolume(b: _Build) -> None:
    history = b.search.history
    if not history:
        return
    b.figure("hypervolume", plots.hypervolume_figure([int(h["generation"]) for h in history],
                                                      [float(h["hypervolume"]) for h in history]))
    b.csv("hypervolume.csv", history)
    b.md.append("## Hypervolume per generation\n")
    b.md.append("![hypervolume](hypervolume.png)\n\nThe y axis is scaled to the values (the figure says where "
                "it starts when that is not 0).\n")
    b.md.append(md_table(["Generation", "Evaluations", "Front size", "Hypervolume"],
                         [[int(h["generation"]), int(h.get("evaluations", 0)), int(h.get("front_size", 0)),
                           f"{h['hypervolume']:.6g}"] for h in history]))


def _scratch_vs_finetune(b: _Build) -> None:
    """Table X."""
    rows, arch_rows = [], []
    for pair, s_rs, f_rs in scratch_finetune_pairs(b.sets):
        metrics, per_arch, summary = scratch_vs_finetune(s_rs, f_rs)
        rows += [{"pair": pair, "metric": m, **summary[m]} for m in metrics]
        arch_rows += [{"pair": pair, "label": b.labels[r["architecture"]], **r} for r in per_arch]
    b.rep.summary["scratch_vs_finetune"] = rows
    if not rows:
        if b.retrains:
            b.md.append("## Training from scratch vs fine-tuning (Table X)\n")
            b.md.append("Not available: no architecture was retrained both from scratch and fine-tuned "
                        "(pass both retrain experiments to `--retrain`).\n")
        return
    b.csv("scratch_vs_finetune.csv", rows)
    b.csv("scratch_vs_finetune_per_arch.csv", arch_rows)
    b.md.append("## Training from scratch vs fine-tuning (Table X)\n")
    b.md.append(table_x(rows))
    b.md.append("Scratch minus fine-tune in accuracy points over the architectures retrained both ways "
                "(columns as in the paper: clean and PGD with the fewest steps; every grid cell in "
                "[scratch_vs_finetune.csv](scratch_vs_finetune.csv), per architecture in "
                "[scratch_vs_finetune_per_arch.csv](scratch_vs_finetune_per_arch.csv)).\n")


def _statistics(b: _Build) -> None:
    """Tables XIV-XV and Figs. 8-9."""
    stats, space = b.stats, b.search.space
    tops = {"block": [most_frequent(c, 2) for c in stats.blocks], "ratio": [most_frequent(c, 2) for c in stats.ratios]}
    b.figure("block_stats", plots.statistics_figure(
        stats.blocks, tops["block"], title=f"Block statistics of the top {stats.k}", id_name="block id",
        tick_labels=[f"{blk.id} {blk.short}" for blk in BLOCKS]))
    b.figure("ratio_stats", plots.statistics_figure(
        stats.ratios, tops["ratio"], title=f"Ratio statistics of the top {stats.k}", id_name="channel ratio",
        tick_labels=[f"{i}: {r:.1f}" for i, r in enumerate(RATIOS)]))
    rebuild = ("`python -m workflow lego --block-stats block_stats.csv --ratio-stats ratio_stats.csv "
               + (f"--dataset {space.dataset} --width {space.width_multiplier}" if space else "--dataset ... --width ...")
               + "`")
    b.md.append(f"## Block and channel statistics of the top {stats.k} subnets (Tables XIV-XV, Figs. 8-9)\n")
    b.md.append(f"Top {stats.k} of {len(b.search.evaluated)} evaluated architectures ({stats.source}) in "
                f"{SELECTION} order: [topk.json](topk.json). Counts per layer in the LegoNet builder's format: "
                "[block_stats.csv](block_stats.csv), [ratio_stats.csv](ratio_stats.csv) "
                f"({rebuild} rebuilds [legonet.json](legonet.json)); the two most frequent per layer in "
                "[stats_top2.csv](stats_top2.csv).\n")
    b.md.append("![block statistics](block_stats.png)\n\n![ratio statistics](ratio_stats.png)\n")
    lego = stats.legonet
    b.md.append(md_table(["Layer", "Blocks (count)", "Ratios (count)", f"{LEGONET} block", f"{LEGONET} ratio"], [
        [layer, ", ".join(f"{i} {BLOCKS[i].short} ({stats.blocks[layer][i]})" for i in tops["block"][layer]),
         ", ".join(f"{RATIOS[i]:.1f} ({stats.ratios[layer][i]})" for i in tops["ratio"][layer]),
         f"{lego.blocks[layer]} {BLOCKS[lego.blocks[layer]].short}", f"{lego.ratios[layer]:.1f}"]
        for layer in range(NUM_LAYERS)]))


def _row_name(b: _Build, set_name: str, r: RetrainResult) -> str:
    return f"{set_name}: {b.labels[r.architecture]}"


def _results(b: _Build) -> None:
    """Tables II-IX: the best of each retrain set, then every retrained architecture."""
    if not b.retrains:
        return
    every = [r for rs in b.sets.values() for r in rs]
    best = [best_result(rs) for rs in b.sets.values()]
    b.csv("results.csv", [result_row(r, b.labels[r.architecture]) for r in every])
    b.csv("best.csv", [result_row(r, b.labels[r.architecture]) for r in best])
    b.md.append("## Results in the paper's layout (Tables II-IX)\n")
    b.md.append(table_caption(every))
    b.md.append("Best retrained architecture of each retrain set (one row per supernet regime; highest "
                "adversarial accuracy, then clean accuracy; [best.csv](best.csv)):\n")
    b.md.append(robustness_table([(_row_name(b, r.set_name, r), r.evaluation()) for r in best], notation="plain"))
    b.md.append("Every retrained architecture ([results.csv](results.csv)):\n")
    b.md.append(robustness_table([(_row_name(b, r.set_name, r), r.evaluation()) for r in every], notation="plain"))


# The search's objectives a retrain also measures (params are the same number on both sides).
RANKED_OBJECTIVES = {"adv_acc": "adversarial accuracy", "clean_acc": "clean accuracy"}
RANKING_COLUMNS = ("set", "objective", "n", "kendall_tau", "p_value", "note")


def kendall_tau(search: Sequence[float], retrain: Sequence[float]) -> tuple[float | None, float | None, str]:
    """(τ-b, two-sided p, note) of scipy.stats.kendalltau; τ None when it is undefined (n < 2, constant
    scores); the note says when n < 3 (τ is then ±1 whatever the supernet does)."""
    from scipy.stats import kendalltau

    n = len(search)
    if n < 2:
        return None, None, f"n = {n}: τ undefined"
    res = kendalltau(search, retrain)
    tau, p = float(res.statistic), float(res.pvalue)
    if not np.isfinite(tau):
        return None, None, "constant scores: τ undefined"
    note = "n < 3: τ is ±1 by construction, not evidence" if n < 3 else ""
    return tau, (p if np.isfinite(p) else None), note


def _ranking(b: _Build) -> None:
    """Kendall τ per objective between the search's scores and the retrain's, and the scatter plot."""
    names = [o.name for o in b.search.objectives if o.name in RANKED_OBJECTIVES]
    scores = {a.key: a.objectives for a in list(b.search.evaluated) + list(b.search.front)}
    colours = plots.series_colours([(name, rs[0].init) for name, rs in b.sets.items()])
    rows, points, panels = [], [], []
    for objective in names:
        panel = []
        for set_name, rs in b.sets.items():
            pairs = [(r, float(scores[r.architecture][objective]), getattr(r, objective)) for r in rs
                     if objective in scores.get(r.architecture, {}) and getattr(r, objective) is not None]
            if not pairs:
                continue
            tau, p, note = kendall_tau([s for _, s, _ in pairs], [t for _, _, t in pairs])
            rows.append({"set": set_name, "objective": objective, "n": len(pairs), "kendall_tau": tau,
                         "p_value": p, "note": note})
            for r, search_score, retrain_score in pairs:
                points.append({"set": set_name, "objective": objective, "label": b.labels[r.architecture],
                               "architecture": r.architecture, "search": search_score, "retrain": retrain_score})
                panel.append(plots.RankPoint(set_name, b.labels[r.architecture], 100 * search_score,
                                             100 * retrain_score, colours[set_name]))
        taus = "\n".join(f"{row['set']} τ = {row['kendall_tau']:.2f}" if row["kendall_tau"] is not None
                         else f"{row['set']} τ –" for row in rows if row["objective"] == objective)
        if panel:
            panels.append((f"{RANKED_OBJECTIVES[objective]}\n{taus}", panel))
    b.rep.summary["ranking"] = rows
    if not rows:
        return
    b.csv("ranking.csv", rows, RANKING_COLUMNS)
    b.csv("ranking_points.csv", points)
    b.figure("ranking", plots.ranking_figure(panels))
    b.md.append("## Does the search rank architectures as retraining does?\n")
    b.md.append("Kendall τ (τ-b, scipy) per retrain set and objective between the search's score (weights "
                "inherited from the supernet, validation split) and the retrained model's (test split), over "
                "the retrained architectures the search evaluated: 1 = the same order, 0 = unrelated. With "
                "a handful of architectures τ is coarse; the ranking benchmark (BENCHMARKS.md) measures it "
                "on more. Pairs in [ranking_points.csv](ranking_points.csv).\n")
    b.md.append(md_table(["Retrain set", "Objective", "n", "Kendall τ", "p", "Note"],
                         [[r["set"], r["objective"], r["n"], "–" if r["kendall_tau"] is None else f"{r['kendall_tau']:.3f}",
                           "–" if r["p_value"] is None else f"{r['p_value']:.3g}", r["note"] or "–"] for r in rows]))
    b.md.append("![search score vs retrain score](ranking.png)\n")


def _difference_row(name: str, lego_r: RetrainResult, best: RetrainResult) -> dict[str, Any]:
    lm, bm = lego_r.metrics(), best.metrics()
    adv = (100.0 * (lego_r.adv_acc - best.adv_acc)
           if lego_r.adv_acc is not None and best.adv_acc is not None else None)
    return {"set": name, "row": "difference (points; params %)", "label": "", "architecture": "",
            "params": 100.0 * (lego_r.params - best.params) / best.params, "adv_acc": adv,
            **{m: 100.0 * (lm[m] - bm[m]) for m in lm if m in bm}}


def _legonet_vs_best(b: _Build) -> None:
    """Table XI: the LegoNet against the best retrained front architecture, per retrain set."""
    if not b.retrains:
        return
    rows, named, text = [], [], []
    for name, rs in b.sets.items():
        lego_r = next((r for r in rs if r.architecture == b.lego.key), None)
        others = [r for r in rs if r.architecture != b.lego.key and r.architecture in b.front_keys] or [
            r for r in rs if r.architecture != b.lego.key]
        if lego_r is None or not others:
            continue
        best = best_result(others)
        label = b.labels[best.architecture]
        named += [(f"{name}: {LEGONET}", lego_r.evaluation()),
                  (f"{name}: best front architecture {label}", best.evaluation())]
        diff = _difference_row(name, lego_r, best)
        text.append(f"- {name}: {LEGONET} minus {label}: clean {diff['clean_acc']:+.2f} points, adversarial "
                    + (f"{diff['adv_acc']:+.2f} points" if diff["adv_acc"] is not None else "–")
                    + f", size {diff['params']:+.2f} %")
        rows += [{"set": name, "row": LEGONET, **result_row(lego_r, LEGONET)},
                 {"set": name, "row": "best front", **result_row(best, label)}, diff]
    b.md.append(f"## {LEGONET} vs the best front architecture (Table XI)\n")
    if not rows:
        b.md.append(f"Not available: no retrain set holds both the {LEGONET} (`{b.lego.key}`) and a front "
                    "architecture. Retrain it with `python -m workflow lego --search ...` (its "
                    "retrain_front.json holds the front's picks and the LegoNet; see README).\n")
        return
    b.csv("legonet_vs_best.csv", rows)
    b.md.append(robustness_table(named, notation="plain"))
    b.md.append("\n" + "\n".join(text) + "\n\nEvery grid cell's difference (accuracy points; size in %) "
                "in [legonet_vs_best.csv](legonet_vs_best.csv). The adversarial accuracy is the retrain's "
                "headline PGD number (training ε, fewest steps).\n")


def _finish(b: _Build) -> None:
    s, rep = b.search, b.rep
    rep.summary = {
        "search": {"name": s.name, "directory": str(s.directory), "space": s.space.to_dict() if s.space else None,
                   "objectives": [{"name": o.name, "direction": o.direction} for o in s.objectives],
                   "evaluated": len(s.evaluated), "evaluated_source": s.evaluated_source,
                   "front_size": len(s.front),
                   "final_hypervolume": s.history[-1]["hypervolume"] if s.history else None},
        "top_k": b.stats.k,
        "legonet": {"architecture": b.lego.key, "params": b.lego.objectives.get("params"),
                    "from_statistics": b.lego is b.stats.legonet},
        "labels": b.labels,
        "retrain_sets": {name: {"init": rs[0].init, "architectures": len(rs),
                                "best": best_result(rs).architecture} for name, rs in b.sets.items()},
        "scratch_vs_finetune": rep.summary.get("scratch_vs_finetune", []),
        "ranking": rep.summary.get("ranking", []),
    }
    rep.files += ["report.md", "report.json"]
    atomic_write_text(rep.out / "report.json", json.dumps({**rep.summary, "files": rep.files}, indent=2) + "\n")
    b.md.append("## Files\n")
    b.md.append("\n".join(f"- [{f}]({f})" for f in rep.files) + "\n")
    atomic_write_text(rep.out / "report.md", "\n".join(b.md))
