"""Write a report as GitHub-flavoured Markdown (images in a sibling folder) and as one
self-contained HTML file (images embedded as data URIs); both from the same context, through the
jinja2 templates in bench/report/templates/.
"""

from __future__ import annotations

import base64
import re
import tempfile
from pathlib import Path

import pandas as pd
import yaml
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from bench import keys
from bench.metrics.table import COST, LATENT, OOD, QUALITY
from bench.report import figures
from bench.report.artifacts import download
from bench.report.claims import CLAIMS_NOTE, claim_rows, evaluate_claims
from bench.report.load import Report, generated_at
from bench.report.provenance import OPTIMIZER_PARAMS
from bench.report.published import declared_published, published_sections
from bench.report.search import SearchReport
from bench.report.search_section import search_context
from bench.report.stats import (
    ALPHA,
    CONFIDENCE,
    SEEDS,
    cell_counts,
    significance,
    summarize,
)
from bench.report.tables import (
    best_row,
    describe,
    failure_rows,
    optimizer_rows,
    summary_note,
    table_rows,
    tests_note,
)
from bench.suite.schema import SAFE_LABEL

FORMATS = ("md", "html")
IMAGES_FOLDER = "images"
CODE_SPAN = re.compile(r"`([^`]+)`")
IMAGE_TITLES = {
    keys.ARTIFACT_SAMPLES: "Samples",
    keys.ARTIFACT_RECONSTRUCTIONS: "Reconstructions (inputs above outputs)",
    keys.ARTIFACT_INTERPOLATION: "Interpolations (prior pairs first, then encoded)",
    keys.ARTIFACT_NEAREST: "The samples nearest the training set, each above its nearest "
    "training image (domain features): copies would be identical pairs",
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
    counts = cell_counts(report.cells, report.variants)
    tests = significance(report.cells, metrics, report.variants)
    # the best-mark only where the best is beyond seed noise of every other variant
    starred = {c.metric.key: [c.winner] for c in tests.comparisons if c.winner}
    colours = figures.variant_colours(report.variants)
    groups = []
    for group in (QUALITY, LATENT, OOD, COST):
        members = [m for m in metrics if m.group == group]
        if not members:
            continue
        groups.append(
            {
                "title": group,
                "slug": _slug(group),
                "metrics": members,
                "rows": table_rows(summary, counts, members, starred),
                "best_row": best_row(members, tests),
                "figure": figures.metric_bars(
                    summary, members, starred, colours, images / f"metrics-{_slug(group)}.png"
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
        if found  # a run without image artifacts gets no empty section
    }
    most_seeds = int(summary[SEEDS].max()) if len(summary) else 0
    single_seed = most_seeds == 1
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
        "confidence": f"{CONFIDENCE:.0%}",
        "comparisons": [describe(c, summary) for c in tests.comparisons],
        "summary_note": summary_note(tests),
        "tests_note": tests_note(tests, metrics),
        "optimizer_params": OPTIMIZER_PARAMS,
        "optimizer_rows": optimizer_rows(report),
        "failures": failure_rows(report),
        "finished_count": len(finished),
        "cell_count": len(report.cells),
        "metric_notes": [(m.title, m.direction, m.about) for m in metrics],
        "search": search_context(report, colours, images),
        "claims": claim_rows(evaluate_claims(report.cells, report.claims)),
        "claims_note": f"{CLAIMS_NOTE} These claims were {report.claims_source}.",
        "published": published_sections(
            report.cells, report.variants, report.runs, declared_published(report.suite_text)
        ),
    }


def data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def code_spans(text: object) -> Markup:
    """HTML of a sentence written for both formats: its Markdown `code` spans as <code>, the
    rest escaped."""
    return Markup(CODE_SPAN.sub(r"<code>\1</code>", str(escape(str(text)))))


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
    glance += _search_glance(report.search)
    description = _suite_description(report.suite_text)
    return f"{description} {glance}" if description else glance


def _search_glance(search: SearchReport | None) -> str:
    if search is None or search.select is None:
        return ""
    trials = f"{search.planned} random-search trials" if search.planned else "a random search"
    return (
        f" Each variant's settings: the best of {trials} by {search.select} (see Search); the "
        "tables hold only the follow-up cells of that setting."
    )


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
        loader=PackageLoader("bench.report", "templates"),
        autoescape=autoescape,
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    environment.filters["md_cell"] = md_cell
    environment.filters["code_spans"] = code_spans
    return environment


def _remove_stale_images(folder: Path, context: dict) -> None:
    """Drop images a previous report left in the folder that this one does not reference."""
    current = {group["figure"] for group in context["groups"]}
    current |= {context["loss_figure"], context["fid_figure"]}
    current |= {path for found in context["images"].values() for path in found.values()}
    if context["search"]:
        current |= {context["search"]["strip_figure"], context["search"]["progress_figure"]}
    for image in folder.glob("*.png"):
        if image not in current:
            image.unlink()


def _write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def variant_images(report: Report, folder: Path) -> dict[str, dict[str, Path]]:
    """label -> {artifact name: local file} for samples, reconstructions and interpolation strips,
    from each variant's lowest finished seed."""
    names = (
        keys.ARTIFACT_SAMPLES,
        keys.ARTIFACT_RECONSTRUCTIONS,
        keys.ARTIFACT_INTERPOLATION,
        keys.ARTIFACT_NEAREST,
    )
    images: dict[str, dict[str, Path]] = {}
    finished = report.finished.sort_values("seed")
    for label, cell in finished.groupby("label", sort=False).first().iterrows():
        present = {a.path for a in report.client.list_artifacts(cell["run_id"])}
        target = folder / f"{label}-seed{cell['seed']}"
        target.mkdir(parents=True, exist_ok=True)
        images[label] = {
            name: download(report.client, cell["run_id"], name, target)
            for name in names
            if name in present
        }
    return {label: images[label] for label in report.variants if label in images}


def image_seed(report: Report, label: str) -> int | None:
    seeds = report.finished.loc[report.finished["label"] == label, "seed"]
    return int(seeds.min()) if len(seeds) else None
