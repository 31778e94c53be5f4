"""Matplotlib figures of a report, written as PNG files; a variant has one colour in all of them.

Figures are built on `matplotlib.figure.Figure` directly (no pyplot): no global state, no GUI
backend, safe to call from tests and servers.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path

import pandas as pd
from matplotlib import colormaps
from matplotlib.colors import to_hex
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import MaxNLocator
from PIL import Image

from .report import Metric

DPI = 110
COLUMNS = 3
PANEL_WIDTH = 4.3  # inches; three panels fit a laptop screen at DPI


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
    handles = [Line2D([], [], color=colours[v], linewidth=2) for v in present]
    figure.legend(
        handles,
        present,
        loc="outside upper center",
        ncol=min(4, len(present)),
        frameon=False,
        fontsize=9.5,
    )
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
