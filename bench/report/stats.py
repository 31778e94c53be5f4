"""The statistics of a report: mean / sample std (ddof=1) / 95 % Student t-interval / n per
variant and metric (`summarize`), each variant's finished, failed and missing cells
(`cell_counts`), and `significance`: the best variant of each headline metric against every other
one (Welch's t-test over the finished seeds), Holm-Bonferroni corrected within a fixed family,
which decides the best-mark of a column.

The families are fixed by the metric table, not by what happened to be measured: the domain
feature space with the pixel-space metrics, and the Inception feature space on its own, so adding
the Inception weights never changes a domain star. Failures count: a variant with a failed or
diverged seed never earns the star (its finished seeds alone would judge it on its survivors), and
every comparison states each side's failed seeds beside its Welch p.

A finished seed without a value of a metric (while the variant's other seeds have one) counts as
a failed seed of that metric's comparison, never silently left out.

Every function here takes a plain DataFrame of cells (columns label, seed, status and one column
per metric key), so the statistics can be checked on hand-built frames.
"""

from __future__ import annotations

import statistics
import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats
from statsmodels.stats.multitest import multipletests

from bench import keys
from bench.metrics.table import Metric
from bench.suite.search import COPYING_LIMIT

ALPHA = 0.05  # family-wise level (Holm) of the Welch tests behind "beyond seed noise"
DOMAIN_FAMILY = "domain"  # the tested metrics of the domain space, and those of no feature space
INCEPTION_FAMILY = "inception"
CONFIDENCE = 0.95  # of the Student t-interval of each mean over seeds
SEEDS = ("seeds", "n")  # summary column: finished cells (seeds) of the variant


def summarize(cells: pd.DataFrame, metrics: list[Metric], variants: list[str]) -> pd.DataFrame:
    """Finished cells -> one row per variant; columns (metric key, "mean" | "std" | "ci" | "n"),
    with the sample std (ddof=1; NaN for one seed) and "ci" the half-width of the CONFIDENCE
    Student t-interval of the mean over seeds (NaN below two seeds), and SEEDS. Variants without
    finished cells have n = 0."""
    by_variant = cells[cells["status"] == keys.STATUS_FINISHED].groupby("label")
    columns = {}
    for metric in metrics:
        values = by_variant[metric.key].agg(["mean", "std", "count"]).reindex(variants)
        count = values["count"].fillna(0).astype(int)
        columns[(metric.key, "mean")] = values["mean"]
        columns[(metric.key, "std")] = values["std"]
        columns[(metric.key, "ci")] = t_half_width(values["std"], count)
        columns[(metric.key, "n")] = count
    columns[SEEDS] = by_variant.size().reindex(variants).fillna(0).astype(int)
    return pd.DataFrame(columns, index=pd.Index(variants, name="label"))


def t_half_width(std: pd.Series, n: pd.Series) -> pd.Series:
    """Half-width of the two-sided CONFIDENCE Student t-interval of a mean over n seeds,
    t_{(1+CONFIDENCE)/2, n-1} * sd / sqrt(n); NaN below two seeds (no interval from one value)."""
    enough = n >= 2
    df = (n - 1).where(enough).astype(float)
    quantile = stats.t.ppf((1 + CONFIDENCE) / 2, df)
    return (quantile * std / np.sqrt(n.where(enough).astype(float))).where(enough)


def cell_counts(cells: pd.DataFrame, variants: list[str]) -> pd.DataFrame:
    """Per variant: its cells, how many finished, failed (the run failed or diverged) and are
    missing (never run, interrupted, or still running / its process died), and the diverged attempts
    of cells that were run again."""
    status = cells["status"]
    attempts = cells.get("diverged_attempts", pd.Series(0, index=cells.index))
    flags = pd.DataFrame(
        {
            "cells": 1,
            "finished": status == keys.STATUS_FINISHED,
            "failed": status == keys.STATUS_FAILED,
            "missing": ~status.isin([keys.STATUS_FINISHED, keys.STATUS_FAILED]),
            # earlier runs of the cell that diverged, though it finished (or failed) later
            "diverged_attempts": pd.to_numeric(attempts, errors="coerce").fillna(0),
        }
    )
    counts = flags.groupby(cells["label"]).sum().reindex(variants)
    return counts.fillna(0).astype(int)


@dataclass
class Versus:
    label: str
    values: list[float]
    p_value: float | None  # raw Welch p; None: not testable (one seed on a side, or no spread)
    adjusted_p: float | None = None  # Holm-adjusted over the report's family (holm_adjust)

    @property
    def verdict(self) -> str:
        if self.p_value is None:
            return "not testable"
        if self.adjusted_p is None:
            return "not corrected"  # compare() alone: holm_adjust decides
        return "beyond seed noise" if self.adjusted_p < ALPHA else "within seed noise"


def family_of(metric: Metric) -> str:
    """The Holm family a tested metric belongs to."""
    return INCEPTION_FAMILY if metric.space == INCEPTION_FAMILY else DOMAIN_FAMILY


@dataclass
class Comparison:
    metric: Metric
    best: str  # best mean (the first in variant order among equal means)
    best_values: list[float]
    others: list[Versus]  # every other variant with values, by mean: runner-up first
    # label -> failed seeds plus the diverged attempts of seeds that finished when run again
    failed: dict[str, int] = field(default_factory=dict)
    cells: dict[str, int] = field(default_factory=dict)  # label -> cells (seeds) of the variant
    # label -> seeds with no result yet (never run, or still running / their process died), of
    # every variant of the report, also those with no value of this metric yet
    missing: dict[str, int] = field(default_factory=dict)
    # label -> finished seeds without a value of this metric, counted in `failed` too: leaving
    # them out would judge a variant on the seeds that produced one (survivor bias)
    no_value: dict[str, int] = field(default_factory=dict)
    # label -> finished seeds that copy their training set (C_T below COPYING_LIMIT): a copy
    # flatters FID, KID, coverage and reconstruction, so such a variant earns no mark
    copying: dict[str, int] = field(default_factory=dict)

    @property
    def family(self) -> str:
        return family_of(self.metric)

    @property
    def best_failed(self) -> int:
        return self.failed.get(self.best, 0)

    @property
    def best_copying(self) -> int:
        return self.copying.get(self.best, 0)

    @property
    def best_missing(self) -> int:
        return self.missing.get(self.best, 0)

    @property
    def incomplete(self) -> list[str]:
        """The variants with seeds that have no result yet, the best first: while there are any,
        "beyond seed noise of every other variant" cannot be known (a variant not run yet, or
        its seeds still running, may still beat the best)."""
        labels = [label for label, n in self.missing.items() if n]
        return sorted(labels, key=lambda label: label != self.best)

    @property
    def winner(self) -> str | None:
        """The best variant where it is beyond seed noise of every other variant after the Holm
        correction (so of the runner-up too), every one of its seeds finished and no variant has
        seeds without a result yet, else None: a best mean alone earns no mark, nor does one
        over the seeds that survived or that have run so far, nor one over the variants that
        have run so far, nor one of a variant with a seed that copies its training set."""
        if not self.others or self.best_failed or self.best_copying or self.incomplete:
            return None
        beyond = all(v.verdict == "beyond seed noise" for v in self.others)
        return self.best if beyond else None

    @property
    def tied(self) -> list[str]:
        """The best and every variant it is not separated from (not significant after the
        correction, or not testable); just the best where it is the winner."""
        return [self.best] + [v.label for v in self.others if v.verdict != "beyond seed noise"]


@dataclass
class Significance:
    comparisons: list[Comparison]  # one per headline metric with values
    family_sizes: dict[str, int]  # family -> its testable comparisons, corrected together

    @property
    def family_size(self) -> int:
        return sum(self.family_sizes.values())

    @property
    def untestable(self) -> int:
        return sum(v.p_value is None for c in self.comparisons for v in c.others)

    def comparison(self, key: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.metric.key == key), None)


def significance(cells: pd.DataFrame, metrics: list[Metric], variants: list[str]) -> Significance:
    """Best against every other variant for each headline metric, with one Holm correction per
    family (`family_of`) over its testable comparisons."""
    comparisons = [compare(cells, m, variants) for m in metrics if m.headline]
    comparisons = [c for c in comparisons if c is not None]
    sizes = {}
    for family in (DOMAIN_FAMILY, INCEPTION_FAMILY):
        members = [c for c in comparisons if c.family == family]
        if members:
            sizes[family] = holm_adjust(members)
    return Significance(comparisons, sizes)


def holm_adjust(comparisons: list[Comparison]) -> int:
    """Holm-Bonferroni over all testable comparisons of the given metrics as one family (testing
    several metrics and variants at 5 % each would find "real" gaps by chance); sets each one's
    adjusted_p and returns the family size. Untestable ones are not in the family."""
    family = [v for c in comparisons for v in c.others if v.p_value is not None]
    if family:
        _, adjusted, _, _ = multipletests([v.p_value for v in family], ALPHA, method="holm")
        for versus, p_value in zip(family, adjusted, strict=True):
            versus.adjusted_p = float(p_value)
    return len(family)


def compare(cells: pd.DataFrame, metric: Metric, variants: list[str]) -> Comparison | None:
    """The best variant (by mean) against every other variant with values: raw p-values of
    Welch's two-sided t-test over the per-seed values (holm_adjust corrects them)."""
    finished = cells[(cells["status"] == keys.STATUS_FINISHED)]
    if metric.key not in finished or metric.lower_is_better is None:
        return None
    column = {label: finished.loc[finished["label"] == label, metric.key] for label in variants}
    values = {label: c.dropna().tolist() for label, c in column.items()}
    values = {label: v for label, v in values.items() if v}
    # a variant with the metric on some seeds but not others lost those seeds; one with no value
    # at all is one the metric does not apply to (no encoder for recon_mse)
    no_value = {label: int(column[label].isna().sum()) for label in values}
    if not values:
        return None
    sign = 1 if metric.lower_is_better else -1
    ranked = sorted(values, key=lambda label: sign * statistics.fmean(values[label]))  # stable
    best = ranked[0]
    others = [
        Versus(label, values[label], welch_p_value(values[best], values[label]))
        for label in ranked[1:]
    ]
    # every variant of the report, not only those with values: one not run yet blocks the star
    counts = cell_counts(cells, list(dict.fromkeys([*variants, *cells["label"]])))
    copying_values = finished.get(keys.DATA_COPYING, pd.Series(np.nan, index=finished.index))
    copies = finished["label"][pd.to_numeric(copying_values, errors="coerce") < COPYING_LIMIT]
    return Comparison(
        metric,
        best,
        values[best],
        others,
        failed={
            label: int(counts.loc[label, "failed"] + counts.loc[label, "diverged_attempts"])
            + no_value[label]
            for label in values
        },
        cells={label: int(counts.loc[label, "cells"]) for label in values},
        missing={label: int(n) for label, n in counts["missing"].items()},
        no_value=no_value,
        copying={label: int((copies == label).sum()) for label in values},
    )


def welch_p_value(a: list[float], b: list[float]) -> float | None:
    """Two-sided p-value of Welch's t-test (unequal variances); None when it cannot be computed:
    fewer than two values on a side, or the same single value on every seed of both sides. Both
    sides constant but different is a certain difference (t is infinite): p = 0."""
    if len(a) < 2 or len(b) < 2:
        return None
    scale = max(1.0, *(x * x for x in a + b))
    spread = statistics.variance(a) + statistics.variance(b)
    if spread <= 1e-12 * scale:
        difference = (statistics.fmean(a) - statistics.fmean(b)) ** 2
        return 0.0 if difference > 1e-12 * scale else None
    with warnings.catch_warnings():
        # scipy warns about precision loss when one side's values are nearly equal; the p-value
        # is still the right one for the data as logged
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)
