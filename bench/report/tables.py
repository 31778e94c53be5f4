"""The report's tables as formatted text: means with their 95 % intervals, the best-mark and ties,
failure counts, the tests behind them, the per-variant optimizer settings.
"""

from __future__ import annotations

import math

import pandas as pd

from bench.metrics.table import Metric
from bench.report.load import Report
from bench.report.provenance import OPTIMIZER_PARAMS
from bench.report.stats import (
    ALPHA,
    CONFIDENCE,
    DOMAIN_FAMILY,
    INCEPTION_FAMILY,
    SEEDS,
    Comparison,
    Significance,
)
from bench.suite.search import COPYING_LIMIT

DASH = "–"
FAMILY_TITLES = {DOMAIN_FAMILY: "domain family", INCEPTION_FAMILY: "Inception family"}


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
        "value. Seeds: the finished cells the means are over. Success: finished cells over "
        "attempts (the variant's cells plus diverged attempts of cells run again). Failed: cells "
        "whose run failed or diverged, of the variant's cells (+ missing: never run, "
        "interrupted and not resumed yet, or still running / died); they are not in the means "
        "(see Failed and missing cells). "
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
    families = "; ".join(
        f"{FAMILY_TITLES[family]}: {size} testable comparison{'s' if size != 1 else ''}"
        for family, size in tests.family_sizes.items()
    )
    return (
        "Tested: the headline metrics "
        + (", ".join(c.metric.title for c in tests.comparisons) or "(none logged)")
        + ". For each, the variant with the best mean is compared with every other variant by "
        "Welch's two-sided t-test (unequal variances) on the per-seed values of the finished "
        "seeds. The Holm-Bonferroni correction is made within a fixed family of tests, one per "
        "feature space (the domain space with the pixel-space metrics; the Inception space on its "
        "own, so that adding Inception weights never changes a domain verdict): "
        + (families or "no testable comparison")
        + "; each row shows the raw and the Holm-adjusted p. Beyond seed noise: "
        f"Holm-adjusted p < {ALPHA}; within seed noise: these seeds do not separate the two "
        "variants, which is not evidence that they are equal (with few seeds the test has "
        "little power). Failures count: a variant with a failed or diverged seed earns no ★, "
        f"nor does one with a seed that copies its training set (C_T below {COPYING_LIMIT:g}), "
        "and no variant earns one while any variant has seeds with no result yet (not run, or "
        "still running: an unmeasured variant may still beat the best); each "
        f"row states the failed and missing seeds of its variant.{untestable} Not tested "
        "(descriptive only): " + (", ".join(untested) or "none") + "."
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
                "success": success_text(count),
                "success_rate": success_rate(count),
                "failed": failed_text(count),
                "any_failed": bool(count["failed"] or count["missing"]),
                "cells": cells,
            }
        )
    return rows


def success_rate(count: pd.Series) -> float:
    """Finished cells over attempts: the variant's cells plus the diverged attempts of cells that
    were run again (a divergence that did not recur still counts against it)."""
    attempts = int(count["cells"]) + int(count.get("diverged_attempts", 0))
    return int(count["finished"]) / attempts if attempts else 0.0


def success_text(count: pd.Series) -> str:
    """'67% (2/3)': the success rate and its counts."""
    attempts = int(count["cells"]) + int(count.get("diverged_attempts", 0))
    return f"{success_rate(count):.0%} ({int(count['finished'])}/{attempts})"


def failed_text(count: pd.Series) -> str:
    """'1/3' (failed of the variant's cells), '+ k missing' where cells have no result yet, and
    the diverged attempts of cells that finished when run again (--rerun): they still count."""
    text = f"{count['failed']}/{count['cells']}"
    text += f" (+{count['missing']} missing)" if count["missing"] else ""
    attempts = int(count.get("diverged_attempts", 0))
    if attempts:
        text += f" (+{attempts} diverged attempt{'s' if attempts != 1 else ''})"
    return text


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
        elif comparison.best_failed and comparison.others:
            texts.append(
                f"no ★ ({comparison.best} failed a seed); tied: " + ", ".join(comparison.tied)
            )
        elif comparison.best_copying and comparison.others:
            texts.append(
                f"no ★ ({comparison.best} copies its training set); tied: "
                + ", ".join(comparison.tied)
            )
        elif comparison.incomplete and comparison.others:
            texts.append(
                f"no ★ ({_names(comparison.incomplete)} seeds missing); tied: "
                + ", ".join(comparison.tied)
            )
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


def _names(labels: list[str]) -> str:
    """'a has' / 'a, b have': the variants a sentence is about, with the verb."""
    return f"{labels[0]} has" if len(labels) == 1 else f"{', '.join(labels)} have"


def describe(comparison: Comparison, summary: pd.DataFrame) -> dict:
    """Words and rows for one headline metric: the best variant, its verdict, and each other
    variant with its raw and Holm-adjusted p."""
    metric = comparison.metric

    def stated(label: str) -> str:
        row = summary.loc[label]
        n = int(row[(metric.key, "n")])
        value = format_mean_ci(row[(metric.key, "mean")], row[(metric.key, "ci")], n)
        value = value if n == 1 else f"{value}, {n} seeds"  # one seed already says "(1 seed)"
        failed = comparison.failed.get(label, 0)
        if failed:
            value += f"; {failed} failed of {comparison.cells[label]} seeds (attempts included)"
            if comparison.no_value.get(label):
                value += f", {comparison.no_value[label]} of them finished without a value"
        missing = comparison.missing.get(label, 0)
        if missing:
            value += f"; {missing} of {comparison.cells[label]} seeds without a result yet"
        return value

    extreme = "lowest" if metric.lower_is_better else "highest"
    lead = f"{comparison.best} has the {extreme} mean {metric.title}: {stated(comparison.best)}."
    if comparison.winner:
        verdict = (
            f"★ {comparison.winner}: beyond seed noise of every other variant after the Holm "
            "correction."
        )
    elif not comparison.others:
        verdict = "No other variant has this metric."
    elif comparison.best_failed:
        verdict = (
            f"No ★: {comparison.best} has {comparison.best_failed} failed or diverged run(s) "
            f"among its {comparison.cells[comparison.best]} seeds"
            + (
                f" ({comparison.no_value[comparison.best]} of them finished without a value)"
                if comparison.no_value.get(comparison.best)
                else ""
            )
            + ", and its mean is over the "
            "seeds that finished; tied: " + ", ".join(comparison.tied) + "."
        )
    elif comparison.best_copying:
        verdict = (
            f"No ★: {comparison.best} copies its training set on {comparison.best_copying} of "
            f"its {comparison.cells[comparison.best]} seeds (data copying C_T below "
            f"{COPYING_LIMIT:g}, Meehan et al. 2020's flag), which flatters this metric; tied: "
            + ", ".join(comparison.tied)
            + "."
        )
    elif comparison.best_missing:
        verdict = (
            f"No ★: {comparison.best} has {comparison.best_missing} of its "
            f"{comparison.cells[comparison.best]} seeds without a result yet (not run, or still "
            "running), and its mean is over the seeds that finished; tied: "
            + ", ".join(comparison.tied)
            + "."
        )
    elif comparison.incomplete:
        verdict = (
            f"No ★ while {_names(comparison.incomplete)} seeds without a result yet (not run, or "
            "still running): a variant not measured yet may still beat the best; tied so far: "
            + ", ".join(comparison.tied)
            + "."
        )
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
