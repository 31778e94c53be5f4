"""Matplotlib figures of a report, written as PNG files; a variant has one colour in all of them.

Figures are built on `matplotlib.figure.Figure` directly (no pyplot): no global state, no GUI
backend, safe to call from tests and servers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from matplotlib.transforms import blended_transform_factory
from PIL import Image

from bench import keys
from bench.metrics.table import Metric

DPI = 110
COLUMNS = 3
PANEL_WIDTH = 4.3  # inches; three panels fit a laptop screen at DPI
FAILED_COLOUR = "#cf222e"
OTHER_COLOUR = "#555555"  # a variant missing from the report's palette (named by experiment)
JITTER = 0.12  # half-width of the horizontal spread of a strip's dots, in variant columns


def variant_colours(variants: Sequence[str]) -> dict[str, str]:
    """One fixed colour per variant label, from the report's variant order."""
    palette = colormaps["tab10" if len(variants) <= 10 else "tab20"].colors
    return {label: to_hex(palette[i % len(palette)]) for i, label in enumerate(variants)}


def metric_bars(
    summary: pd.DataFrame,
    metrics: Sequence[Metric],
    starred: dict[str, list[str]],
    colours: dict[str, str],
    path: Path,
) -> Path | None:
    """One panel per metric: mean per variant as a bar, the 95 % t-interval over seeds as error
    bar (only with two seeds or more), a star on the variants in `starred` (metric key -> labels:
    those beyond seed noise of every other variant, not merely the best mean)."""
    if not metrics:
        return None
    variants = list(summary.index)
    rows = math.ceil(len(metrics) / COLUMNS)
    columns = min(COLUMNS, len(metrics))
    height = 0.8 + 0.28 * len(variants)
    figure = Figure(figsize=(PANEL_WIDTH * columns, height * rows + 0.3), layout="constrained")
    axes = figure.subplots(rows, columns, sharey=True, squeeze=False).ravel()
    positions = list(range(len(variants)))
    for ax, metric in zip(axes, metrics, strict=False):
        means = summary[(metric.key, "mean")]
        intervals = summary[(metric.key, "ci")].fillna(0.0)
        ax.barh(
            positions,
            means.fillna(0.0),
            xerr=intervals,
            color=[colours[v] for v in variants],
            error_kw={"elinewidth": 1, "capsize": 2, "ecolor": "#333333"},
            height=0.7,
        )
        for y, variant in enumerate(variants):
            mean = means[variant]
            if pd.isna(mean):
                ax.text(0, y, " –", va="center", fontsize=8, color="#666666")
                continue
            star = " ★" if variant in starred.get(metric.key, []) else ""
            ax.text(
                mean + intervals[variant],
                y,
                f" {mean:.3g}{star}",
                va="center",
                fontsize=8,
                fontweight="bold" if star else "normal",
            )
        ax.set_title(f"{metric.title} {metric.arrow}", fontsize=10.5, loc="left")
        ax.set_xlabel(metric.direction, fontsize=8, color="#555555")
        ax.margins(x=0.25)
        ax.tick_params(labelsize=8.5)
        ax.grid(axis="x", alpha=0.3)
        ax.set_axisbelow(True)
    axes[0].set_yticks(positions, variants)
    axes[0].invert_yaxis()
    for ax in axes[len(metrics) :]:
        ax.set_visible(False)
    return _save(figure, path)


def curves(
    history: pd.DataFrame,
    series: Sequence[tuple[str, str]],
    variants: Sequence[str],
    colours: dict[str, str],
    path: Path,
) -> Path | None:
    """One panel per (key, title): per variant, the mean over seeds at each step as a line and
    +/- one sample std as a band (two seeds or more)."""
    series = [(key, title) for key, title in series if (history["key"] == key).any()]
    if not series:
        return None
    rows = math.ceil(len(series) / COLUMNS)
    columns = min(COLUMNS, len(series))
    figure = Figure(figsize=(PANEL_WIDTH * columns, 2.7 * rows + 0.6), layout="constrained")
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    for ax, (key, title) in zip(axes, series, strict=False):
        for variant in variants:
            points = history[(history["key"] == key) & (history["label"] == variant)]
            if points.empty:
                continue
            by_step = points.groupby("step")["value"].agg(["mean", "std", "count"])
            colour = colours[variant]
            ax.plot(by_step.index, by_step["mean"], color=colour, linewidth=1.4)
            band = by_step[by_step["count"] > 1]
            if not band.empty:
                ax.fill_between(
                    band.index,
                    band["mean"] - band["std"],
                    band["mean"] + band["std"],
                    color=colour,
                    alpha=0.18,
                    linewidth=0,
                )
        ax.set_title(title, fontsize=10.5, loc="left")
        ax.set_xlabel("training step", fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.tick_params(labelsize=8.5)
        ax.grid(alpha=0.3)
    for ax in axes[len(series) :]:
        ax.set_visible(False)
    present = [v for v in variants if (history["label"] == v).any()]
    _line_legend(figure, present, colours, fontsize=9.5)
    return _save(figure, path)


def _line_legend(figure: Figure, present: list[str], colours: dict, fontsize: float) -> None:
    """One legend above the panels: a line per variant, in its colour."""
    handles = [Line2D([], [], color=colours.get(v, OTHER_COLOUR), linewidth=2) for v in present]
    figure.legend(
        handles,
        present,
        loc="outside upper center",
        ncol=min(4, len(present)),
        frameon=False,
        fontsize=fontsize,
    )


def trial_strips(
    trials: pd.DataFrame,
    labels: Sequence[str],
    metric: Metric,
    chosen: dict[str, int | None],
    colours: dict[str, str],
    path: Path,
) -> Path | None:
    """One column per variant: every ended trial's selection value as a dot over a box (median,
    quartiles, whiskers at 1.5 IQR), the chosen trial ringed, and each failed trial as a cross on
    the worst edge (the top for a lower-is-better metric) marked "failed": the whole distribution
    of a search beside its best, as Lucic et al. 2018 report it, with no failure hidden."""
    ended = trials[trials["status"].isin([keys.STATUS_FINISHED, keys.STATUS_FAILED])]
    if ended.empty:
        return None
    width = max(PANEL_WIDTH, 1.1 * len(labels) + 1.8)
    figure = Figure(figsize=(width, 3.8), layout="constrained")
    ax = figure.subplots()
    worst_edge = 0.97 if metric.lower_is_better is not False else 0.03
    jitter = np.random.default_rng(0)  # fixed: the same report draws the same figure
    for x, label in enumerate(labels):
        group = ended[ended["label"] == label]
        offsets = x + jitter.uniform(-JITTER, JITTER, len(group))
        values = pd.to_numeric(group["value"])
        has_value = values.notna().to_numpy()
        colour = colours.get(label, OTHER_COLOUR)
        if has_value.any():
            _box(ax, x, values[has_value], colour)
            ax.scatter(offsets[has_value], values[has_value], s=22, color=colour, zorder=3)
        best = (group["trial"] == chosen.get(label)).to_numpy() & has_value
        if best.any():
            ax.scatter(
                offsets[best], values[best], s=110, facecolors="none", edgecolors="black", zorder=4
            )
        if not has_value.all():
            _mark_failed(ax, offsets[~has_value], x, worst_edge)
    _leave_room_at(ax, "top" if worst_edge > 0.5 else "bottom")
    ax.set_xticks(
        range(len(labels)),
        labels,
        rotation=25 if len(labels) > 3 else 0,
        ha="right" if len(labels) > 3 else "center",
    )
    ax.set_xlim(-0.6, len(labels) - 0.4)
    ax.set_ylabel(f"{metric.title} {metric.arrow} ({metric.direction})", fontsize=8.5)
    ax.set_title(f"{metric.title} of every trial", fontsize=10.5, loc="left")
    ax.tick_params(labelsize=8.5)
    ax.grid(axis="y", alpha=0.3)
    ax.set_axisbelow(True)
    _strip_legend(figure)
    return _save(figure, path)


def _mark_failed(ax, offsets: np.ndarray, x: int, edge: float) -> None:
    """Failed trials as crosses on the axis edge `edge` (axes coordinates: the worst end), with
    their count: they have no value to plot, and must not vanish from the figure."""
    on_edge = blended_transform_factory(ax.transData, ax.transAxes)
    ys = [edge] * len(offsets)
    ax.scatter(
        offsets,
        ys,
        marker="x",
        s=36,
        color=FAILED_COLOUR,
        zorder=4,
        transform=on_edge,
        clip_on=False,
    )
    ax.text(
        x + JITTER + 0.04,
        edge,
        f"failed ({len(offsets)})",
        transform=on_edge,
        va="center",
        fontsize=8,
        color=FAILED_COLOUR,
    )


def _strip_legend(figure: Figure) -> None:
    ring = {"markerfacecolor": "none", "markeredgecolor": "black", "markersize": 10}
    handles = [
        Line2D([], [], marker="o", linestyle="", color=OTHER_COLOUR, markersize=5),
        Line2D([], [], marker="o", linestyle="", **ring),
        Line2D([], [], marker="x", linestyle="", color=FAILED_COLOUR, markersize=6),
    ]
    labels = ["trial", "chosen trial", "failed trial (the worst value)"]
    figure.legend(handles, labels, loc="outside upper center", ncol=3, frameon=False, fontsize=8.5)


def _box(ax, x: float, values: pd.Series, colour: str) -> None:
    ax.boxplot(
        [values.to_numpy()],
        positions=[x],
        widths=0.5,
        showfliers=False,  # every trial is drawn as a dot already
        medianprops={"color": colour, "linewidth": 1.8},
        boxprops={"color": "#888888"},
        whiskerprops={"color": "#888888"},
        capprops={"color": "#888888"},
    )


def _leave_room_at(ax, side: str, share: float = 0.12) -> None:
    """Stretch the value axis so that the failed markers on its edge clear every dot."""
    low, high = ax.get_ylim()
    room = (high - low) * share
    if side == "top":
        ax.set_ylim(low, high + room)
    else:
        ax.set_ylim(low - room, high)


def best_so_far_curves(
    curve: pd.DataFrame,
    labels: Sequence[str],
    metric: Metric,
    planned: int | None,
    colours: dict[str, str],
    path: Path,
) -> Path | None:
    """Per variant, the best selection value among trials 0..n against n (report.best_so_far): a
    curve still improving at the last trial says the search budget was too small to settle."""
    curve = curve.dropna(subset=["best"])
    if curve.empty:
        return None
    figure = Figure(figsize=(PANEL_WIDTH * 1.5, 3.4), layout="constrained")
    ax = figure.subplots()
    present = [label for label in labels if (curve["label"] == label).any()]
    for label in present:
        points = curve[curve["label"] == label]
        colour = colours.get(label, OTHER_COLOUR)
        ax.step(points["trial"], points["best"], where="post", color=colour, linewidth=1.6)
        ax.plot(points["trial"], points["best"], "o", color=colour, markersize=3.5)
    if planned:
        ax.set_xlim(-0.3, planned - 0.7)
    ax.set_xlabel("trial number n (trials in the order drawn)", fontsize=8.5)
    ax.set_ylabel(f"best {metric.title} of trials 0..n {metric.arrow}", fontsize=8.5)
    ax.set_title(f"Best {metric.title} so far", fontsize=10.5, loc="left")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.tick_params(labelsize=8.5)
    ax.grid(alpha=0.3)
    _line_legend(figure, present, colours, fontsize=9)
    return _save(figure, path)


def enlarge(source: Path, target: Path, min_width: int = 320) -> Path:
    """Copy an image grid, scaled up by a whole factor (nearest neighbour: pixels stay sharp)
    until it is at least min_width wide, so that tiny 28x28 grids are legible everywhere."""
    image = Image.open(source)
    factor = max(1, math.ceil(min_width / image.width))
    if factor > 1:
        image = image.resize((image.width * factor, image.height * factor), Image.NEAREST)
    target.parent.mkdir(parents=True, exist_ok=True)
    image.save(target)
    return target


def _save(figure: Figure, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=DPI, facecolor="white")
    return path
