"""Write a report as GitHub-flavoured Markdown (images in a sibling folder) and as one
self-contained HTML file (images embedded as data URIs); both from the same context, through the
jinja2 templates in bench/templates/.
"""

from __future__ import annotations

import base64
import math
import tempfile
from pathlib import Path

import pandas as pd
import yaml
from jinja2 import Environment, PackageLoader, StrictUndefined

from . import figures, keys
from .report import (
    ALPHA,
    COST,
    LATENT,
    QUALITY,
    SEEDS,
    Comparison,
    Metric,
    Report,
    best_variants,
    compare,
    generated_at,
    image_seed,
    summarize,
    variant_images,
)
from .suite import SAFE_LABEL

FORMATS = ("md", "html")
IMAGES_FOLDER = "images"
DASH = "–"
IMAGE_TITLES = {
    keys.ARTIFACT_SAMPLES: "Samples",
    keys.ARTIFACT_RECONSTRUCTIONS: "Reconstructions (inputs above outputs)",
    keys.ARTIFACT_INTERPOLATION: "Interpolations (prior pairs first, then encoded)",
}


def write_report(report: Report, out: Path, formats: tuple[str, ...] = FORMATS) -> list[Path]:
    """Render `report` into `out` (report.md + images/, report.html); returns the files written."""
    out.mkdir(parents=True, exist_ok=True)
    written = []
    with tempfile.TemporaryDirectory() as scratch:
        # The Markdown needs its images beside it; HTML alone leaves no image files behind.
        folder = out / IMAGES_FOLDER if "md" in formats else Path(scratch) / IMAGES_FOLDER
        context = build_context(report, folder, Path(scratch))
        environment = _environment()
        if "md" in formats:
            text = environment.get_template("report.md.j2").render(
                **context, src=lambda path: path.relative_to(out).as_posix()
            )
            written.append(_write(out / "report.md", text))
            _remove_stale_images(folder, context)
        if "html" in formats:
            html = _environment(autoescape=True).get_template("report.html.j2")
            text = html.render(**context, src=data_uri)
            written.append(_write(out / "report.html", text))
    return written


def build_context(report: Report, images: Path, scratch: Path) -> dict:
    """Everything the templates show, formatted once for both formats."""
    metrics = report.metrics
    summary = summarize(report.cells, metrics, report.variants)
    best = {m.key: best_variants(summary, m) for m in metrics}
    colours = figures.variant_colours(report.variants)
    groups = []
    for group in (QUALITY, LATENT, COST):
        members = [m for m in metrics if m.group == group]
        if not members:
            continue
        groups.append(
            {
                "title": group,
                "slug": _slug(group),
                "metrics": members,
                "rows": table_rows(summary, members, best),
                "figure": figures.metric_bars(
                    summary, members, best, colours, images / f"metrics-{_slug(group)}.png"
                ),
            }
        )
    losses = sorted(k for k in set(report.histories["key"]) if k.startswith(keys.TRAIN_PREFIX))
    over_training = [
        (m.key, m.title) for m in metrics if m.key in _keys_with_several_steps(report.histories)
    ]
    images_by_variant = {
        label: {
            name: figures.enlarge(path, images / f"{_file_label(label)}-{name}")
            for name, path in found.items()
        }
        for label, found in variant_images(report, scratch / "artifacts").items()
    }
    most_seeds = int(summary[SEEDS].max()) if len(summary) else 0
    single_seed = most_seeds == 1
    comparisons = [compare(report.cells, m, report.variants) for m in metrics if m.headline]
    finished = report.finished
    return {
        "title": f"Benchmark report: {report.suite_name}",
        "report": report,
        "generated_at": generated_at(),
        "at_a_glance": _at_a_glance(report),
        "colours": colours,
        "groups": groups,
        "loss_figure": figures.curves(
            report.histories,
            [(k, k.removeprefix(keys.TRAIN_PREFIX)) for k in losses],
            report.variants,
            colours,
            images / "losses.png",
        ),
        "fid_figure": figures.curves(
            report.histories, over_training, report.variants, colours, images / "fid.png"
        ),
        "images": images_by_variant,
        "image_titles": IMAGE_TITLES,
        "image_seeds": {label: image_seed(report, label) for label in images_by_variant},
        "single_seed": single_seed,
        "nothing_finished": most_seeds == 0,
        "alpha": ALPHA,
        "comparisons": [describe(c, summary, single_seed) for c in comparisons if c],
        "failures": failure_rows(report),
        "finished_count": len(finished),
        "cell_count": len(report.cells),
        "metric_notes": [(m.title, m.direction, m.about) for m in metrics],
    }


def table_rows(summary: pd.DataFrame, metrics: list[Metric], best: dict) -> list[dict]:
    rows = []
    for label, row in summary.iterrows():
        cells = []
        for metric in metrics:
            mean, std, n = (row[(metric.key, stat)] for stat in ("mean", "std", "n"))
            text = format_mean_std(mean, std, n)
            if n and n != row[SEEDS]:
                text += f" (n={n})"
            cells.append(
                {
                    "text": text,
                    "value": "" if pd.isna(mean) else repr(float(mean)),
                    "best": label in best[metric.key],
                }
            )
        rows.append({"label": label, "seeds": int(row[SEEDS]), "cells": cells})
    return rows


def format_mean_std(mean: float, std: float, n: int) -> str:
    """'12.1 ± 0.43': the std to two significant figures and the mean to the same decimals, with a
    shared power of ten for very small or large values ('(1.09 ± 0.09)e-9'); one seed: the
    value alone (4 significant figures); no value: a dash."""
    if not n or pd.isna(mean):
        return DASH
    if n < 2 or pd.isna(std) or std == 0 or not math.isfinite(std):
        return f"{mean:.4g}"
    exponent = math.floor(math.log10(abs(mean))) if mean else 0
    scale = exponent if exponent < -3 or exponent > 5 else 0
    mean, std = mean / 10**scale, std / 10**scale
    decimals = max(0, 1 - math.floor(math.log10(std)))
    text = f"{mean:.{decimals}f} ± {std:.{decimals}f}"
    return f"({text})e{scale}" if scale else text


def describe(comparison: Comparison, summary: pd.DataFrame, single_seed: bool) -> dict:
    """Words for one headline metric: who is best and which gaps are beyond seed noise."""
    metric = comparison.metric

    def stated(label: str) -> str:
        row = summary.loc[label]
        n = int(row[(metric.key, "n")])
        value = format_mean_std(row[(metric.key, "mean")], row[(metric.key, "std")], n)
        return f"{value}, {n} seed{'s' if n != 1 else ''}"

    def listed(verdict: str) -> list[str]:
        return [
            f"{v.label} ({stated(v.label)}"
            + (f"; p = {v.p_value:.2g})" if v.p_value is not None else ")")
            for v in comparison.others
            if v.verdict == verdict
        ]

    extreme = "lowest" if metric.lower_is_better else "highest"
    if comparison.tied:
        names = ", ".join([comparison.best, *comparison.tied[:-1]])
        lead = (
            f"{names} and {comparison.tied[-1]} share the {extreme} {metric.title}: "
            f"{stated(comparison.best)}."
        )
    else:
        lead = f"{comparison.best} has the {extreme} {metric.title}: {stated(comparison.best)}."
    return {
        "metric": metric,
        "lead": lead,
        "best": comparison.best,
        "beyond": [] if single_seed else listed("beyond seed noise"),
        "within": [] if single_seed else listed("within seed noise"),
        "untestable": [] if single_seed else listed("not testable"),
        "alone": not comparison.others and not comparison.tied,
    }


def failure_rows(report: Report) -> list[dict]:
    return [
        {
            "label": cell.label,
            "seed": int(cell.seed),
            "status": cell.status,
            "reason": cell.reason or "no reason recorded",
            "details": cell.details if cell.details and cell.details != cell.reason else "",
            "run_id": cell.run_id if isinstance(cell.run_id, str) else "",
        }
        for cell in report.unfinished.itertuples()
    ]


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def md_cell(text: object) -> str:
    """Text safe inside a GitHub Markdown table cell."""
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ")


def _at_a_glance(report: Report) -> str:
    cells = f"{len(report.finished)} of {len(report.cells)} cells finished."
    if report.finished.empty:
        return f"{len(report.variants)} variants; no cell has finished yet. {cells}"
    seeds = len(report.seeds)
    provenance = dict(report.provenance)
    glance = (
        f"{len(report.variants)} variants × {seeds} seed{'s' if seeds != 1 else ''} "
        f"on {provenance['Dataset']}; budget per cell: {provenance['Budget']}. {cells}"
    )
    description = _suite_description(report.suite_text)
    return f"{description} {glance}" if description else glance


def _suite_description(suite_text: str | None) -> str:
    """The suite's own description (the author's words on what the run is and is not)."""
    try:
        parsed = yaml.safe_load(suite_text or "")
    except yaml.YAMLError:
        return ""
    description = parsed.get("description") if isinstance(parsed, dict) else None
    return " ".join(str(description).split()) if description else ""


def _keys_with_several_steps(histories: pd.DataFrame) -> set[str]:
    if histories.empty:
        return set()
    steps = histories.groupby(["run_id", "key"])["step"].nunique()
    return {key for (_, key), count in steps.items() if count > 1}


def _file_label(label: str) -> str:
    """Labels bench wrote are already file-safe (bench.suite.SAFE_LABEL); anything else in the
    store is slugged so no path leaves the output folder."""
    return label if SAFE_LABEL.fullmatch(label) else _slug(label)


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "-" for c in text.lower()).strip("-").replace("--", "-")


def _environment(autoescape: bool = False) -> Environment:
    environment = Environment(
        loader=PackageLoader("bench", "templates"),
        autoescape=autoescape,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["md_cell"] = md_cell
    return environment


def _remove_stale_images(folder: Path, context: dict) -> None:
    """Drop images a previous report left in the folder that this one does not reference."""
    current = {group["figure"] for group in context["groups"]}
    current |= {context["loss_figure"], context["fid_figure"]}
    current |= {path for found in context["images"].values() for path in found.values()}
    for image in folder.glob("*.png"):
        if image not in current:
            image.unlink()


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path
