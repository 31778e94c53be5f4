"""The report's Claims section: hypotheses a suite declared before it ran (`claims:`), each tested
on the finished seeds.

A claim says that its `better` variants beat its `worse` ones on a metric, in the metric's
direction (for a metric with a target, such as sharpness's "closest to 1", on the distance to
it). Each side's values are the per-seed values of all its variants, pooled; the test is
Welch's two-sided t-test between the two sides (scipy, as for the headline comparisons), and one
Holm-Bonferroni correction runs over the report's testable claims, a family of its own beside the
headline families. The verdict:

- *holds*: the difference is significant after the correction, in the claimed direction;
- *contradicted*: significant, in the opposite direction;
- *undecided at these seeds*: not significant, or not testable (fewer than two values a side).

Failures count as they do for the best-mark: a side with a failed or diverged seed (attempts of
cells that later finished included) is judged on its survivors only, so it cannot win; nor can a
side with seeds that have no result yet (not run, or still running), which is not yet the side
the suite declared. A claim whose better side failed or misses a seed never *holds*, and one
whose worse side does never is *contradicted*: it is undecided, and the section says why.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import pandas as pd
from statsmodels.stats.multitest import multipletests

from bench import keys
from bench.metrics.table import Metric, metric_specs
from bench.report.stats import ALPHA, cell_counts, t_half_width, welch_p_value
from bench.report.tables import format_mean_ci
from bench.suite.schema import ClaimConfig

HOLDS, CONTRADICTED, UNDECIDED = "holds", "contradicted", "undecided at these seeds"


@dataclass
class ClaimResult:
    claim: ClaimConfig
    metric: Metric | None  # None: the metric is not in the metric table (an old suite file)
    better: list[float]  # pooled per-seed values of the better side's finished cells
    worse: list[float]
    failed_better: int  # failed or diverged seeds (and attempts) of the better side
    failed_worse: int
    missing_better: int = 0  # seeds of the better side with no result yet
    missing_worse: int = 0
    p_value: float | None = None  # raw Welch p; None: not testable
    adjusted_p: float | None = None  # Holm over the report's testable claims

    @property
    def verdict(self) -> str:
        if self.adjusted_p is None or self.adjusted_p >= ALPHA:
            return UNDECIDED
        claimed = self.better_wins
        if claimed and self.failed_better or not claimed and self.failed_worse:
            return UNDECIDED  # the winning side is judged on its survivors
        if self.missing_better or self.missing_worse:
            return UNDECIDED  # either side's seeds not run yet may still turn the result
        return HOLDS if claimed else CONTRADICTED

    @property
    def better_wins(self) -> bool:
        """Whether the better side's mean is better, in the metric's direction."""
        better, worse = (
            statistics.fmean(map(self.metric.score, v)) for v in (self.better, self.worse)
        )
        return better < worse if self.metric.lower_is_better else better > worse

    @property
    def why(self) -> str:
        """Why a claim is undecided, when it is for a reason beyond seed noise."""
        if self.p_value is None:
            return "not testable: fewer than two finished seeds on a side, or no spread"
        if self.adjusted_p is not None and self.adjusted_p < ALPHA:
            side = "better" if self.better_wins else "worse"
            failed = self.failed_better if self.better_wins else self.failed_worse
            if failed:
                return (
                    f"significant, but the {side} side has {failed} failed or diverged "
                    "seed(s): judged on its survivors, it cannot win"
                )
            missing = self.missing_better if self.better_wins else self.missing_worse
            if missing:
                return (
                    f"significant, but the {side} side has {missing} seed(s) without a result "
                    "yet: judged on the seeds run so far, it cannot win"
                )
            other = "worse" if self.better_wins else "better"
            missing = self.missing_worse if self.better_wins else self.missing_better
            return (
                f"significant, but the {other} side has {missing} seed(s) without a result yet, "
                "which may still turn the result"
            )
        return "within seed noise after the Holm correction"


def evaluate_claims(cells: pd.DataFrame, claims: list[ClaimConfig]) -> list[ClaimResult]:
    """Every claim tested on the finished cells (columns label, status, one per metric), with one
    Holm correction over the testable ones."""
    metrics = {m.key: m for m in metric_specs()}
    finished = cells[cells["status"] == keys.STATUS_FINISHED]
    labels = list(dict.fromkeys(cells["label"]))
    counts = cell_counts(cells, labels) if labels else None
    results = []
    for claim in claims:
        metric = metrics.get(claim.metric)
        result = ClaimResult(
            claim,
            metric,
            _values(finished, claim.better, claim.metric if metric else None),
            _values(finished, claim.worse, claim.metric if metric else None),
            _side_count(counts, claim.better, "failed", "diverged_attempts"),
            _side_count(counts, claim.worse, "failed", "diverged_attempts"),
            _side_count(counts, claim.better, "missing"),
            _side_count(counts, claim.worse, "missing"),
        )
        if metric is not None:
            # a metric with a target (sharpness: closest to 1) is tested on |value - target|
            result.p_value = welch_p_value(
                [metric.score(v) for v in result.better], [metric.score(v) for v in result.worse]
            )
        results.append(result)
    testable = [r for r in results if r.p_value is not None]
    if testable:
        adjusted = multipletests([r.p_value for r in testable], alpha=ALPHA, method="holm")[1]
        for result, p in zip(testable, adjusted, strict=True):
            result.adjusted_p = float(p)
    return results


def _values(finished: pd.DataFrame, side: list[str], key: str | None) -> list[float]:
    """The per-seed values of `key` of the finished cells of the variants in `side`, pooled."""
    if key is None or key not in finished:
        return []
    return [float(v) for v in finished[finished["label"].isin(side)][key].dropna()]


def _side_count(counts: pd.DataFrame | None, side: list[str], *columns: str) -> int:
    """The sum of cell_counts' `columns` over the variants in `side`: failed, diverged_attempts
    (failed or diverged seeds, attempts included), missing (seeds with no result yet)."""
    if counts is None:
        return 0
    rows = counts.loc[[label for label in side if label in counts.index]]
    return int(sum(rows[column].sum() for column in columns))


def mean_ci(values: list[float]) -> str:
    """'0.123 ± 0.045 (3 seeds)', the mean with its 95% t-interval's half-width."""
    if not values:
        return "no finished seed"
    std = pd.Series([statistics.stdev(values) if len(values) > 1 else float("nan")])
    half = t_half_width(std, pd.Series([len(values)])).iloc[0]
    text = format_mean_ci(statistics.fmean(values), half, len(values))
    return text if len(values) == 1 else f"{text} ({len(values)} seeds)"


def claim_rows(results: list[ClaimResult]) -> list[dict]:
    """What the Claims section shows, one row per claim."""
    rows = []
    for r in results:
        metric = r.metric
        rows.append(
            {
                "name": r.claim.name,
                "source": r.claim.source,
                "metric": f"{metric.title} ({metric.direction})" if metric else r.claim.metric,
                "better": ", ".join(r.claim.better),
                "worse": ", ".join(r.claim.worse),
                "better_mean": mean_ci(r.better),
                "worse_mean": mean_ci(r.worse),
                "p": _p(r.p_value),
                "adjusted_p": _p(r.adjusted_p),
                "verdict": r.verdict,
                "why": r.why if r.verdict == UNDECIDED else "",
                "failed": f"{r.failed_better} / {r.failed_worse}"
                + (
                    f" (+ {r.missing_better} / {r.missing_worse} missing)"
                    if r.missing_better or r.missing_worse
                    else ""
                ),
            }
        )
    return rows


def _p(value: float | None) -> str:
    return "–" if value is None else f"{value:.2g}"


CLAIMS_NOTE = (
    "Hypotheses the suite declares. Each side's values are the per-seed values of "
    "all its variants' finished cells, pooled; Welch's two-sided t-test compares the two sides, "
    "with one Holm-Bonferroni correction over the testable claims (a family of its own). "
    f"Verdicts at α = {ALPHA}: *holds* (significant in the claimed direction), *contradicted* "
    "(significant the other way), *undecided at these seeds* (not significant, not testable, or "
    "significant for a side with failed or diverged seeds, which cannot win, or while either "
    "side has seeds with no result yet, which may still turn it). Failed: "
    "failed or diverged seeds of the better / worse side (+ missing: seeds with no result yet)."
)
