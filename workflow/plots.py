"""Figures of the analysis report (paper Figs. 5-9, hypervolume per generation, and every pair of
objectives when a search has more than three), matplotlib only.

Every function takes plain data and returns a :class:`matplotlib.figure.Figure` built without
pyplot (no global state; Agg canvas), so :mod:`workflow.report` can save it and tests can read
the plotted arrays back (``collection.get_offsets()``, ``collection.get_sizes()``,
``image.get_array()``). Collections and texts carry a ``gid`` saying what they hold.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure

from .choice import short_label
from .output import size

# Marker area (points²) of the smallest and the largest model: area grows linearly with parameters.
MIN_MARKER = 20.0
MAX_MARKER = 600.0
DPI = 110
# Fig. 5: red = trained from scratch, blue = fine-tuned from the supernet; grey = the search's estimate.
INIT_COLOURS = {"scratch": "#d62728", "finetune": "#1f77b4", "search": "#7f7f7f"}
_OTHER_COLOURS = ("#2ca02c", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf", "#ff7f0e")


@dataclass(frozen=True)
class Point:
    """One architecture in one panel of Figs. 5-7 (errors in %)."""

    label: str
    architecture: str
    params: float
    adv_error: float
    clean_error: float
    colour: str
    on_front: bool = True  # False: not on the searched front (LegoNet, ...): drawn as a star


def marker_size(params: float, max_params: float) -> float:
    """Marker area for ``params`` (Figs. 6-7: circle size = number of parameters)."""
    return MIN_MARKER + (MAX_MARKER - MIN_MARKER) * float(params) / max(float(max_params), 1.0)


def architecture_colours(keys: Sequence[str]) -> dict[str, str]:
    """One colour per architecture key (tab20, in order), shared by every panel and figure."""
    cmap = colormaps["tab20"]
    return {k: to_hex(cmap(i % cmap.N)) for i, k in enumerate(dict.fromkeys(keys))}


def series_colours(names_and_inits: Sequence[tuple[str, str]]) -> dict[str, str]:
    """Colours of the 3-D view's series: the first series of each init gets Fig. 5's colour."""
    out: dict[str, str] = {}
    used: set[str] = set()
    others = iter(_OTHER_COLOURS * (1 + len(names_and_inits)))
    for name, init in names_and_inits:
        if init in INIT_COLOURS and init not in used:
            out[name] = INIT_COLOURS[init]
            used.add(init)
        else:
            out[name] = next(others)
    return out


def shared_limits(points: Sequence[Point], margin: float = 0.12) -> tuple[tuple[float, float], tuple[float, float]]:
    """(x limits, y limits) holding every point with a margin: one scale for all panels."""
    if not points:
        return (0.0, 100.0), (0.0, 100.0)
    out = []
    for values in ([p.adv_error for p in points], [p.clean_error for p in points]):
        lo, hi = min(values), max(values)
        pad = max(hi - lo, 2.0) * margin
        out.append((lo - pad, hi + pad))
    return out[0], out[1]


def size_legend_values(params: Sequence[float]) -> list[float]:
    """Parameter counts shown in the marker-size legend: the smallest and the largest plotted (and
    the middle one when they differ by more than 20 %)."""
    if not params:
        return []
    lo, hi = min(params), max(params)
    if hi <= lo:
        return [lo]
    return [lo, (lo + hi) / 2, hi] if hi > 1.2 * lo else [lo, hi]


def front_figure(panels: Sequence[tuple[str, Sequence[Point]]], max_params: float) -> Figure:
    """Figs. 6-7: adversarial error vs clean error, one panel per point set, marker area = parameters.

    In every panel, the searched front's architectures form the collection with gid ``front``
    (circles) and the others (LegoNet, ...) the one with gid ``extra`` (stars); points keep the
    order of ``panels``. All panels share one scale (:func:`shared_limits`) so that a point's
    move between panels is its change; the legend with gid ``sizes`` reads marker area as parameters.
    """
    n = max(len(panels), 1)
    fig = Figure(figsize=(5.0 * n, 4.8), layout="constrained")
    every = [p for _, points in panels for p in points]
    xlim, ylim = shared_limits(every)
    for i, (title, points) in enumerate(panels):
        ax = fig.add_subplot(1, n, i + 1)
        for gid, marker, sel in (("front", "o", [p for p in points if p.on_front]),
                                 ("extra", "*", [p for p in points if not p.on_front])):
            if not sel:
                continue
            sc = ax.scatter([p.adv_error for p in sel], [p.clean_error for p in sel],
                            s=[marker_size(p.params, max_params) for p in sel], c=[p.colour for p in sel],
                            marker=marker, alpha=0.8, edgecolors="black", linewidths=0.6)
            sc.set_gid(gid)
        for p in points:
            ax.annotate(short_label(p.label), (p.adv_error, p.clean_error), textcoords="offset points",
                        xytext=(6, 4), fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_xlabel("adversarial error (%)")
        ax.set_ylabel("clean error (%)")
        ax.set_xlim(*xlim)
        ax.set_ylim(*ylim)
        ax.grid(alpha=0.3)
    _size_legend(fig, [p.params for p in every], max_params)
    return fig


def _size_legend(fig: Figure, params: Sequence[float], max_params: float) -> None:
    values = size_legend_values(params)
    if not values:
        return
    ax = fig.axes[0]
    handles = [ax.scatter([], [], s=marker_size(v, max_params), facecolors="none", edgecolors="black",
                          label=size(v)) for v in values]
    legend = fig.legend(handles=handles, loc="outside lower center", ncols=len(handles), fontsize=8,
                        frameon=False, title="marker area = parameters (area grows linearly from 0)",
                        title_fontsize=8, handleheight=3.0, borderpad=0.8)
    legend.set_gid("sizes")


def front_3d_figure(series: Sequence[tuple[str, Sequence[Point]]], colours: Mapping[str, str]) -> Figure:
    """Fig. 5: parameters (M) × adversarial error × clean error, one colour per series (gid = name),
    each point labelled as in the 2-D panels (texts with gid ``label``)."""
    fig = Figure(figsize=(6.4, 5.4), layout="constrained")
    ax = fig.add_subplot(projection="3d")
    for name, points in series:
        if not points:
            continue
        sc = ax.scatter([p.params / 1e6 for p in points], [p.adv_error for p in points],
                        [p.clean_error for p in points], c=colours[name], label=name, depthshade=False, s=30)
        sc.set_gid(name)
        for p in points:
            text = ax.text(p.params / 1e6, p.adv_error, p.clean_error, f" {short_label(p.label)}", fontsize=7,
                           color=colours[name])
            text.set_gid("label")
    ax.set_xlabel("parameters (M)")
    ax.set_ylabel("adversarial error (%)")
    ax.set_zlabel("clean error (%)")
    ax.legend(fontsize=8, loc="upper left")
    return fig


def _objective_axis(name: str) -> tuple[float, str]:
    """(scale, label) of an objective's axis: accuracies in %, sizes in millions."""
    if name.endswith("_acc"):
        return 100.0, f"{name} (%)"
    if name in ("params", "flops"):
        return 1e-6, f"{name} (M)"
    return 1.0, name


def pairwise_figure(values: Sequence[Mapping[str, float]], objectives: Sequence[tuple[str, str]],
                    labels: Sequence[str], colours: Sequence[str]) -> Figure:
    """Every pair of objectives of a front, for any number of them (a fourth, ``flops``, included).

    One panel per pair below the diagonal of an m x m grid: objective ``j`` on x, ``i`` on y
    (``j < i``), its collection with gid ``pair:<name_i>:<name_j>``; the diagonal names the
    objective and its direction (texts with gid ``objective``). Points keep the order of
    ``values``, one colour per architecture as in the other figures.
    """
    m = len(objectives)
    fig = Figure(figsize=(2.6 * max(m, 2), 2.4 * max(m, 2)), layout="constrained")
    for i, (name_i, dir_i) in enumerate(objectives):
        si, label_i = _objective_axis(name_i)
        for j, (name_j, _) in enumerate(objectives[: i + 1]):
            ax = fig.add_subplot(m, m, i * m + j + 1)
            if i == j:
                text = ax.text(0.5, 0.5, f"{name_i}\n({dir_i})", ha="center", va="center", fontsize=10,
                               transform=ax.transAxes)
                text.set_gid("objective")
                ax.set_axis_off()
                continue
            sj, label_j = _objective_axis(name_j)
            sc = ax.scatter([float(v[name_j]) * sj for v in values], [float(v[name_i]) * si for v in values],
                            c=list(colours), s=28, edgecolors="black", linewidths=0.5)
            sc.set_gid(f"pair:{name_i}:{name_j}")
            for v, label in zip(values, labels, strict=True):
                ax.annotate(short_label(label), (float(v[name_j]) * sj, float(v[name_i]) * si),
                            textcoords="offset points", xytext=(4, 3), fontsize=6)
            ax.grid(alpha=0.3)
            ax.tick_params(labelsize=7)
            if i == m - 1:
                ax.set_xlabel(label_j, fontsize=8)
            if j == 0:
                ax.set_ylabel(label_i, fontsize=8)
    return fig


def hypervolume_figure(generations: Sequence[int], hypervolumes: Sequence[float]) -> Figure:
    """Hypervolume of the front after each generation (paper §IV-A2); the line has gid ``hypervolume``.

    The y axis is scaled to the values; when it does not start at 0 its label (gid
    ``truncation``) says where it starts, and a break mark sits at its foot.
    """
    fig = Figure(figsize=(5.4, 3.6), layout="constrained")
    ax = fig.add_subplot()
    (line,) = ax.plot(list(generations), list(hypervolumes), marker="o")
    line.set_gid("hypervolume")
    ax.set_xlabel("generation")
    ax.set_ylabel("hypervolume (normalised objectives)")
    ax.grid(alpha=0.3)
    if generations:
        ax.set_xticks(list(generations) if len(generations) <= 25 else ax.get_xticks())
    bottom = ax.get_ylim()[0]
    if hypervolumes and bottom > 0:  # said in the axis label, and a break mark at the axis' foot
        ax.set_ylabel(f"hypervolume (normalised objectives)\naxis truncated: starts at {bottom:.4g}, not 0")
        ax.yaxis.label.set_gid("truncation")
        for y0 in (0.0, 0.025):
            ax.plot([-0.015, 0.015], [y0, y0 + 0.025], transform=ax.transAxes, color="black", lw=0.8,
                    clip_on=False)
    return fig


def statistics_figure(table: Sequence[Sequence[int]], top: Sequence[Sequence[int]], *, title: str,
                      id_name: str, tick_labels: Sequence[str]) -> Figure:
    """Figs. 8-9: counts per layer (heat map, ids × layers) with the two most frequent ids marked.

    ``image.get_array()`` is ``table`` transposed; the collection with gid ``first`` holds
    ``(layer, most frequent id)`` and the one with gid ``second`` ``(layer, second id)``.
    """
    counts = np.asarray(table, dtype=float).T  # ids × layers
    n_ids, n_layers = counts.shape
    fig = Figure(figsize=(8.0, 1.6 + 0.28 * n_ids), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(counts, origin="lower", aspect="auto", cmap="Blues", interpolation="nearest",
                   vmin=0, vmax=max(1.0, counts.max()))
    for (i, layer), c in np.ndenumerate(counts):
        if c:
            ax.text(layer, i, f"{int(c)}", ha="center", va="center", fontsize=7,
                    color="white" if c > 0.6 * counts.max() else "black")
    for rank, gid, face in ((0, "first", "#d62728"), (1, "second", "#ff7f0e")):
        xy = [(layer, ids[rank]) for layer, ids in enumerate(top) if len(ids) > rank]
        if xy:
            sc = ax.scatter([x for x, _ in xy], [y for _, y in xy], s=140, facecolors="none", edgecolors=face,
                            linewidths=1.8 if rank == 0 else 1.2, label=("most frequent", "second")[rank])
            sc.set_gid(gid)
    ax.set_xticks(range(n_layers))
    ax.set_yticks(range(n_ids), list(tick_labels), fontsize=7)
    ax.set_xlabel("layer")
    ax.set_ylabel(id_name)
    ax.set_title(title, fontsize=10)
    fig.colorbar(im, ax=ax, label="count", fraction=0.03)
    fig.legend(fontsize=7, loc="outside lower center", ncols=2, frameon=False)
    return fig


def save_figure(fig: Figure, path: str | os.PathLike) -> None:
    """Write ``fig`` as PNG through a temporary file and a rename (never a half-written image)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        fig.savefig(tmp, format="png", dpi=DPI)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


@dataclass(frozen=True)
class RankPoint:
    """One retrained architecture in one panel of the ranking figure (accuracies in %)."""

    series: str  # the retrain set
    label: str
    search: float  # the search's score (inherited weights, validation split)
    retrain: float  # after retraining (test split)
    colour: str


def ranking_figure(panels: Sequence[tuple[str, Sequence[RankPoint]]]) -> Figure:
    """Search score vs retrain score, one panel per objective (title: objective and Kendall τ).

    One scatter collection per (panel, series) with gid ``rank:<panel index>:<series>``; its
    offsets are ``(search, retrain)`` in the points' order. Each point is labelled.
    """
    fig = Figure(figsize=(4.6 * max(1, len(panels)), 4.2), layout="constrained")
    for k, (title, points) in enumerate(panels):
        ax = fig.add_subplot(1, max(1, len(panels)), k + 1)
        for series in dict.fromkeys(p.series for p in points):
            pts = [p for p in points if p.series == series]
            sc = ax.scatter([p.search for p in pts], [p.retrain for p in pts], c=pts[0].colour, s=36,
                            label=series, edgecolors="black", linewidths=0.4)
            sc.set_gid(f"rank:{k}:{series}")
            for p in pts:
                ax.annotate(short_label(p.label), (p.search, p.retrain), fontsize=7, xytext=(3, 3),
                            textcoords="offset points")
        ax.set_xlabel("search score (supernet weights, validation) %")
        ax.set_ylabel("after retraining (test) %")
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        if k == 0 and points:
            ax.legend(fontsize=7, loc="best")
    return fig
