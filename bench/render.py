"""Write a report as GitHub-flavoured Markdown (images in a sibling folder) and as one
self-contained HTML file (images embedded as data URIs); both from the same context, through the
jinja2 templates in bench/templates/.
"""

from __future__ import annotations

import base64
import math
import re
import tempfile
from pathlib import Path

import pandas as pd
import yaml
from jinja2 import Environment, PackageLoader, StrictUndefined
from markupsafe import Markup, escape

from . import figures, keys
from .report import (
    ALPHA,
    CONFIDENCE,
    COST,
    LATENT,
    NOT_ENDED,
    OPTIMIZER_PARAMS,
    QUALITY,
    SEEDS,
    Comparison,
    Metric,
    Report,
    SearchChoice,
    SearchReport,
    Significance,
    best_so_far,
    cell_counts,
    generated_at,
    image_seed,
    metric_specs,
    significance,
    summarize,
    variant_images,
)
from .suite import SAFE_LABEL, BudgetConfig, SpaceEntry, follow_up_seeds, trial_budget

FORMATS = ("md", "html")
IMAGES_FOLDER = "images"
CODE_SPAN = re.compile(r"`([^`]+)`")
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
    counts = cell_counts(report.cells, report.variants)
    tests = significance(report.cells, metrics, report.variants)
    # the best-mark only where the best is beyond seed noise of every other variant
    starred = {c.metric.key: [c.winner] for c in tests.comparisons if c.winner}
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
    }


def summary_note(tests: Significance) -> str:
    """How to read the summary tables (both formats say the same)."""
    tested = [c.metric.title for c in tests.comparisons]
    if tested:
        stars = (
            "★ marks a variant whose mean is beyond seed noise of every other variant "
            "(Welch's t-test, Holm-corrected, see Is it real?); the Best row names it, or else "
            "every variant tied with the best mean. Tested: " + ", ".join(tested) + "; "
            "the other columns are not tested and get no ★."
        )
    else:
        stars = "No headline metric was logged, so no column is tested and none has a ★."
    return (
        f"Each value: mean ± half-width of its {CONFIDENCE:.0%} confidence interval over "
        f"seeds, a Student t-interval (mean ± t({(1 + CONFIDENCE) / 2:g}, n−1) · sd / √n, sd the "
        "sample standard "
        'deviation of the n seeds). "(1 seed)": a single seed, which has no interval; a value '
        "without ±: the same on every seed; (n=k): only k of the variant's seeds have this "
        "value. Seeds: the finished cells the means are over. Failed: cells whose run failed, "
        "diverged or was killed, of the variant's cells (+ missing: never run, or still "
        "running / died); they are not in the means (see Failed and missing cells). "
        "↓ lower is better, ↑ higher is better; – no value (the metric does not apply to the "
        f"variant, or was not logged). {stars}"
    )


def tests_note(tests: Significance, metrics: list[Metric]) -> str:
    """What "Is it real?" tested, how, and over how large a family."""
    untested = [m.title for m in metrics if not m.headline]
    untestable = (
        f" {tests.untestable} comparison{'s are' if tests.untestable != 1 else ' is'} not "
        "testable (fewer than two seeds on a side, or no spread over seeds) and not in the "
        "family."
        if tests.untestable
        else ""
    )
    return (
        "Tested: the headline metrics "
        + (", ".join(c.metric.title for c in tests.comparisons) or "(none logged)")
        + ". For each, the variant with the best mean is compared with every other variant by "
        "Welch's two-sided t-test (unequal variances) on the per-seed values. One "
        "Holm-Bonferroni correction covers all "
        f"{tests.family_size} testable comparison{'s' if tests.family_size != 1 else ''} of "
        "this report, across all tested metrics; each row shows the raw and the Holm-adjusted "
        "p. Beyond seed noise: "
        f"Holm-adjusted p < {ALPHA}; within seed noise: these seeds do not separate the two "
        "variants, which is not evidence that they are equal (with few seeds the test has "
        f"little power).{untestable} Not tested (descriptive only): "
        + (", ".join(untested) or "none")
        + "."
    )


def table_rows(
    summary: pd.DataFrame, counts: pd.DataFrame, metrics: list[Metric], starred: dict
) -> list[dict]:
    """One row per variant: its finished seeds, failed cells and a cell per metric."""
    rows = []
    for label, row in summary.iterrows():
        cells = []
        for metric in metrics:
            mean, std, ci = (row[(metric.key, stat)] for stat in ("mean", "std", "ci"))
            n = int(row[(metric.key, "n")])  # iterrows gives floats in a mixed-type row
            text = format_mean_ci(mean, ci, n)
            if n > 1 and n != row[SEEDS]:
                text += f" (n={n})"
            cells.append(
                {
                    "text": text,
                    "value": "" if pd.isna(mean) else repr(float(mean)),
                    "best": label in starred.get(metric.key, []),
                    "detail": cell_detail(mean, std, ci, n),
                }
            )
        count = counts.loc[label]
        rows.append(
            {
                "label": label,
                "seeds": int(row[SEEDS]),
                "failed": failed_text(count),
                "any_failed": bool(count["failed"] or count["missing"]),
                "cells": cells,
            }
        )
    return rows


def failed_text(count: pd.Series) -> str:
    """'1/3' (failed of the variant's cells), '+ k missing' where cells have no result yet."""
    text = f"{count['failed']}/{count['cells']}"
    return text + (f" (+{count['missing']} missing)" if count["missing"] else "")


def best_row(metrics: list[Metric], tests: Significance) -> list[str]:
    """Under each column: the winner (★), the variants tied with the best, or why none."""
    texts = []
    for metric in metrics:
        comparison = tests.comparison(metric.key)
        if not metric.headline:
            texts.append("not tested")
        elif comparison is None:
            texts.append(DASH)
        elif comparison.winner:
            texts.append(f"★ {comparison.winner}")
        elif not comparison.others:
            texts.append(f"only {comparison.best}")
        else:
            texts.append("tied: " + ", ".join(comparison.tied))
    return texts


def format_mean_ci(mean: float, half_width: float, n: int) -> str:
    """'12.1 ± 0.43' (mean ± half-width of its t-interval): the half-width to two significant
    figures and the mean to the same decimals, with a shared power of ten for very small or large
    values ('(1.09 ± 0.09)e-9'); one seed: the value and '(1 seed)'; the same value on every
    seed: the value alone; no value: a dash."""
    if not n or pd.isna(mean):
        return DASH
    if n < 2:
        return f"{_plain(mean)} (1 seed)"
    if pd.isna(half_width) or half_width == 0 or not math.isfinite(half_width):
        return _plain(mean)
    exponent = math.floor(math.log10(abs(mean))) if mean else 0
    scale = exponent if exponent < -3 or exponent > 5 else 0
    mean, half_width = mean / 10**scale, half_width / 10**scale
    decimals = max(0, 1 - math.floor(math.log10(half_width)))
    text = f"{mean:.{decimals}f} ± {half_width:.{decimals}f}"
    return f"({text})e{scale}" if scale else text


def cell_detail(mean: float, std: float, half_width: float, n: int) -> str:
    """The numbers behind a table cell (HTML tooltip): interval bounds, sample std and n."""
    if not n or pd.isna(mean):
        return "no value"
    if n < 2:
        return f"one seed: {mean:.6g}, no interval"
    low, high = mean - half_width, mean + half_width
    return (
        f"mean {mean:.6g}; {CONFIDENCE:.0%} t-interval [{low:.6g}, {high:.6g}]; "
        f"sample sd {std:.4g}; n = {n}"
    )


def _plain(value: float) -> str:
    """Counts as integers ('38400', not '3.84e+04'), anything else to 4 significant figures."""
    if float(value).is_integer() and abs(value) < 1e12:
        return str(int(value))
    return f"{value:.4g}"


def format_p(p_value: float | None) -> str:
    return DASH if p_value is None else f"{p_value:.2g}"


def describe(comparison: Comparison, summary: pd.DataFrame) -> dict:
    """Words and rows for one headline metric: the best variant, its verdict, and each other
    variant with its raw and Holm-adjusted p."""
    metric = comparison.metric

    def stated(label: str) -> str:
        row = summary.loc[label]
        n = int(row[(metric.key, "n")])
        value = format_mean_ci(row[(metric.key, "mean")], row[(metric.key, "ci")], n)
        return value if n == 1 else f"{value}, {n} seeds"  # one seed already says "(1 seed)"

    extreme = "lowest" if metric.lower_is_better else "highest"
    lead = f"{comparison.best} has the {extreme} mean {metric.title}: {stated(comparison.best)}."
    if comparison.winner:
        verdict = (
            f"★ {comparison.winner}: beyond seed noise of every other variant after the Holm "
            "correction."
        )
    elif not comparison.others:
        verdict = "No other variant has this metric."
    else:
        verdict = (
            "No variant is beyond seed noise of all others after the Holm correction; tied: "
            + ", ".join(comparison.tied)
            + "."
        )
    rows = [
        {
            "label": versus.label,
            "stated": stated(versus.label),
            "p": format_p(versus.p_value),
            "adjusted": format_p(versus.adjusted_p),
            "verdict": versus.verdict,
        }
        for versus in comparison.others
    ]
    return {"metric": metric, "lead": lead, "verdict": verdict, "rows": rows}


def optimizer_rows(report: Report) -> list[dict]:
    """Per variant, its resolved optimizer settings (a dash where it has none)."""
    return [
        {
            "label": label,
            "values": [report.optimizer[label].get(name) or DASH for name in OPTIMIZER_PARAMS],
        }
        for label in report.variants
        if label in report.optimizer
    ]


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


def search_context(report: Report, colours: dict, images: Path) -> dict | None:
    """The Search section: the protocol in words, one row per variant, every failed trial, and
    the two figures (each trial's value per variant; best value so far over the trials)."""
    search = report.search
    if search is None:
        return None
    empty = {"metric": None, "protocol": [], "rows": [], "failed": [], "notes": []}
    figures_none = {"strip_figure": None, "progress_figure": None}
    if search.select is None:
        note = (
            f"{search.trial_runs} trial run(s) of a search are in this experiment, but the metric "
            "that selects the best trial is unknown: the suite file was not given and no search "
            "has chosen a trial yet. Report the suite file to see the search."
        )
        return empty | figures_none | {"notes": [note]}
    metric = selection_metric(search.select)
    chosen = {label: choice.best_trial for label, choice in search.choices.items()}
    curve = best_so_far(search.trials, bool(metric.lower_is_better))
    return {
        "metric": metric,
        "protocol": search_protocol(search, metric, report.seeds),
        "rows": search_rows(search),
        "failed": failed_trial_rows(search),
        "notes": search_notes(search),
        "strip_figure": figures.trial_strips(
            search.trials, search.labels, metric, chosen, colours, images / "search-trials.png"
        ),
        "progress_figure": figures.best_so_far_curves(
            curve, search.labels, metric, search.planned, colours, images / "search-progress.png"
        ),
    }


def selection_metric(key: str) -> Metric:
    """The report's description of a selection metric (its title names the feature space)."""
    known = next((m for m in metric_specs() if m.key == key), None)
    lower = keys.selection_metrics().get(key)
    return known or Metric(key, key, lower, QUALITY)


def search_protocol(search: SearchReport, metric: Metric, finished_seeds: list[int]) -> list[str]:
    """The protocol as sentences: what was drawn, from where, for how long, and how chosen
    (finished_seeds: the follow-up seeds with a finished cell, all that is known without the
    suite file)."""
    selection = (
        f"Selection: per variant, the trial with the best {metric.title} (`{metric.key}`, "
        f"{metric.direction}). A failed trial (it raised, diverged, or ended without a finite "
        f"`{metric.key}`) counts as the worst value, so it is never chosen; ties go to the lower "
        "trial number."
    )
    tables = (
        "Every table, test and figure outside this section holds only these follow-up cells: a "
        "trial's own number took part in choosing its setting, so it would flatter the winner; "
        "the trials appear only in this section."
    )
    suite, config = search.suite, search.config
    if config is None:
        trial_seeds = sorted({int(s) for s in search.trials["seed"] if s >= 0})
        return [
            "The suite file was not given, so the space, the planned number of trials and the "
            "budgets are not shown here (the suite file logged with the runs is under "
            "Provenance).",
            selection + " (The metric is read from the search parent runs.)",
            f"Seeds: the trials trained with seeds {_seed_list(trial_seeds)}; each chosen setting "
            "is trained again with fresh follow-up seeds (finished: "
            f"{_seed_list(finished_seeds)}). " + tables,
        ]
    first, last = config.trial_seed, config.trial_seed + config.trials - 1
    return [
        f"Every variant gets the same random search (Lucic et al. 2018): {config.trials} "
        f"trial{'s' if config.trials != 1 else ''}, each a setting drawn by Optuna's "
        f"RandomSampler (seed {config.seed}) from the space below. Trial n of every variant uses "
        "draw n; each variant takes the names it reads (e.g. lr_d only with a discriminator).",
        "Space: "
        + "; ".join(space_text(name, entry) for name, entry in config.space.items())
        + ".",
        f"Budget: each trial trains once for {budget_length(trial_budget(suite))}; each "
        f"follow-up cell for {budget_length(suite.budget)}{_other_overrides(config.budget)}.",
        selection,
        f"Seeds: trial n trains with seed {config.trial_seed} + n (seeds {first}–{last}); each "
        f"chosen setting is trained again with the follow-up seeds "
        f"{_seed_list(follow_up_seeds(suite))}, which never took part in choosing it. " + tables,
    ]


def space_text(name: str, entry: SpaceEntry) -> str:
    """'`lr_g` log-uniform on [0.0001, 0.01]' and the like, for one searched name."""
    if entry.loguniform is not None:
        return f"`{name}` log-uniform on [{entry.loguniform[0]:g}, {entry.loguniform[1]:g}]"
    if entry.uniform is not None:
        return f"`{name}` uniform on [{entry.uniform[0]:g}, {entry.uniform[1]:g}]"
    if entry.int is not None:
        return f"`{name}` an integer, uniform on [{entry.int[0]}, {entry.int[1]}]"
    return f"`{name}` one of " + ", ".join(_choice_text(value) for value in entry.choice)


def _choice_text(value: object) -> str:
    return "[" + ", ".join(map(str, value)) + "]" if isinstance(value, list | tuple) else str(value)


def budget_length(budget: BudgetConfig) -> str:
    """'400 generator updates', '400 batches' or '3 epochs': the length of training."""
    if budget.steps is None:
        return f"{budget.epochs} epoch{'s' if budget.epochs != 1 else ''}"
    unit = "generator updates" if budget.parity == "generator_updates" else "batches"
    return f"{budget.steps} {unit}"


def _other_overrides(overrides: dict) -> str:
    """The trial budget's overrides besides its length (batch size, ...), in words."""
    others = {k: v for k, v in overrides.items() if k not in ("steps", "epochs")}
    if not others:
        return ""
    return "; the trials also set " + ", ".join(f"{k} {v}" for k, v in others.items())


def _seed_list(seeds: list[int]) -> str:
    return ", ".join(str(seed) for seed in seeds) or "none recorded"


def search_rows(search: SearchReport) -> list[dict]:
    """One row per searched variant: trials ended of planned, failed trials, the chosen trial and
    setting, its selection value, and the median over the finished trials."""
    rows = []
    order = list(search.config.space) if search.config else None
    for label in search.labels:
        trials = search.trials[search.trials["label"] == label]
        status = trials["status"]
        ended = int(status.isin([keys.STATUS_FINISHED, keys.STATUS_FAILED]).sum())
        failed = int((status == keys.STATUS_FAILED).sum())
        values = pd.to_numeric(trials.loc[status == keys.STATUS_FINISHED, "value"]).dropna()
        choice = search.choices.get(label)
        chosen = choice is not None and choice.best_trial is not None
        planned = search.planned if search.planned is not None else DASH
        rows.append(
            {
                "label": label,
                "ended": f"{ended}/{planned}",
                "failed": failed,
                "best_trial": str(choice.best_trial) if chosen else _unchosen(choice),
                "setting": setting_text(choice.values, order) if chosen else DASH,
                "best_value": _plain(choice.best_value)
                if chosen and choice.best_value is not None
                else DASH,
                "median": _plain(float(values.median())) if len(values) else DASH,
            }
        )
    return rows


def _unchosen(choice: SearchChoice | None) -> str:
    if choice is not None and choice.status == "FAILED":
        return "none: all failed"
    return "not chosen yet"


def setting_text(values: dict[str, str], order: list[str] | None) -> str:
    """'lr_g 0.00125, betas [0.5, 0.999]': the chosen searched values, in the space's order."""
    names = [n for n in order if n in values] if order else sorted(values)
    names += sorted(set(values) - set(names))
    return ", ".join(f"{name} {_short_number(values[name])}" for name in names) or DASH


def _short_number(text: str) -> str:
    """A logged float to three significant figures ('0.00125', '3.2e-5'); anything else as it
    was logged (integers, lists, names)."""
    try:
        number = float(text)
    except ValueError:
        return text
    if not any(mark in text.lower() for mark in (".", "e")) or not math.isfinite(number):
        return text
    if number == 0 or 1e-3 <= abs(number) < 1e4:
        return f"{number:.3g}"
    mantissa, exponent = f"{number:.2e}".split("e")
    return f"{float(mantissa):g}e{int(exponent)}"


def failed_trial_rows(search: SearchReport) -> list[dict]:
    """Every trial that failed (or whose run has not ended), with its reason: none is hidden."""
    shown = search.trials[search.trials["status"].isin([keys.STATUS_FAILED, NOT_ENDED])]
    return [
        {
            "label": trial.label,
            "trial": int(trial.trial),
            "seed": int(trial.seed),
            "status": trial.status,
            "reason": trial.reason or "no reason recorded",
            "details": trial.details if trial.details and trial.details != trial.reason else "",
            "run_id": trial.run_id if isinstance(trial.run_id, str) else "",
        }
        for trial in shown.itertuples()
    ]


def search_notes(search: SearchReport) -> list[str]:
    """Trials the table does not count as ended, and trial runs of other searches."""
    notes = []
    not_run = int((search.trials["status"] == "not run").sum())
    if not_run:
        notes.append(
            f"{not_run} planned trial{'s have' if not_run != 1 else ' has'} no run yet "
            "(run `bench run` on the suite to continue the search)."
        )
    if search.trials_not_shown:
        notes.append(
            f"{search.trials_not_shown} trial run(s) of this experiment belong to other "
            "searches (an edited space, budget or selection metric) and are not shown."
        )
    return notes


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
        loader=PackageLoader("bench", "templates"),
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
