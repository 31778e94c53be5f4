"""The report's Claims section: hypotheses a suite declared before it ran (`claims:`), each tested
on the finished seeds.

A claim says that its `better` variants beat its `worse` ones on a metric. "Better" is the
claim's own `direction` (lower, higher, or closer to the metric's target) where it states one,
else the metric's table direction. A claim about groups is an intersection-union test: it
holds only when every (better, worse) variant pair does. Pooling a side's variants into one
sample would test a mixture, the spread between its variants counted as seed noise, so that one
strong GAN could carry a weak one that loses to the VAE on every seed.

Each pair is tested with Welch's two-sided t-test over its two variants' per-seed values (scipy,
as for the headline comparisons). The claim's p is its largest pairwise p (the IUT's p), and one
Holm-Bonferroni correction runs over the report's testable claims, a family of its own beside the
headline families; each pair is then judged at the level its claim got (its p times the claim's
Holm factor). The verdict:

- *holds*: every pair significant, in the claimed direction;
- *contradicted*: every pair significant, the other way;
- *mixed*: some pairs decided, not all the same way; the section names the pairs that disagree;
- *undecided at these seeds*: no pair decided (within seed noise, blocked by failures), or a pair
  not testable (fewer than two values a variant).

Failures count as they do for the best-mark, per pair: a pair whose winner has a failed or
diverged seed (attempts of cells that later finished included), or a finished seed without a
value of the metric, is judged on its survivors only, so it is not decided; nor is a pair with a
variant whose seeds have no result yet (not run, or still running), which may still turn it.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Callable
from dataclasses import dataclass, field

import pandas as pd
from statsmodels.stats.multitest import multipletests

from bench import keys
from bench.metrics.table import Metric, metric_specs
from bench.report.stats import ALPHA, cell_counts, t_half_width, welch_p_value
from bench.report.tables import format_mean_ci
from bench.suite.schema import ClaimConfig

HOLDS, CONTRADICTED, MIXED, UNDECIDED = "holds", "contradicted", "mixed", "undecided at these seeds"
# the outcome of one (better, worse) pair
CLAIMED, OPPOSITE, NOISE, BLOCKED, UNTESTABLE = (
    "claimed",
    "opposite",
    "within seed noise",
    "blocked",
    "not testable",
)


@dataclass
class Side:
    """One variant of a claim: its per-seed values and what keeps it from winning."""

    label: str
    values: list[float]  # finished seeds with a value of the metric
    failed: int  # failed or diverged seeds (and attempts)
    no_value: int  # finished seeds without a value of the metric: failed seeds, for the claim
    missing: int  # seeds with no result yet

    @property
    def lost(self) -> int:
        return self.failed + self.no_value


@dataclass
class Pair:
    better: Side  # claimed better
    worse: Side
    p_value: float | None  # raw Welch p; None: not testable
    claimed_wins: bool = True  # whether the claimed-better variant's mean is better
    adjusted_p: float | None = None  # at the claim's Holm level

    @property
    def name(self) -> str:
        return f"{self.better.label} vs {self.worse.label}"

    @property
    def outcome(self) -> str:
        if self.p_value is None:
            return UNTESTABLE
        if self.adjusted_p is None or self.adjusted_p >= ALPHA:
            return NOISE
        winner = self.better if self.claimed_wins else self.worse
        if winner.lost or self.better.missing or self.worse.missing:
            return BLOCKED
        return CLAIMED if self.claimed_wins else OPPOSITE

    @property
    def why(self) -> str:
        """The pair's outcome in words, for a claim that is not decided by every pair alike."""
        outcome = self.outcome
        if outcome == CLAIMED:
            return f"{self.name}: significant as claimed"
        if outcome == OPPOSITE:
            return f"{self.name}: significant the other way"
        if outcome == UNTESTABLE:
            return f"{self.name}: not testable (fewer than two values a variant, or no spread)"
        if outcome == NOISE:
            return f"{self.name}: within seed noise"
        winner = self.better if self.claimed_wins else self.worse
        if winner.lost:
            return (
                f"{self.name}: significant, but {winner.label} has {winner.failed} failed or "
                f"diverged seed(s) and {winner.no_value} without a value: judged on its "
                "survivors, it cannot win"
            )
        waiting = [s.label for s in (self.better, self.worse) if s.missing]
        return f"{self.name}: significant, but {', '.join(waiting)} has seeds without a result yet"


@dataclass
class ClaimResult:
    claim: ClaimConfig
    metric: Metric | None  # None: the metric is not in the metric table (an old suite file)
    sides: dict[str, Side] = field(default_factory=dict)  # label -> its values and failures
    pairs: list[Pair] = field(default_factory=list)  # every (better, worse) pair
    p_value: float | None = None  # the largest pairwise p (the IUT's); None: not testable
    adjusted_p: float | None = None  # Holm over the report's testable claims

    @property
    def verdict(self) -> str:
        outcomes = {p.outcome for p in self.pairs}
        if not outcomes or UNTESTABLE in outcomes or outcomes <= {NOISE, BLOCKED}:
            return UNDECIDED
        if outcomes == {CLAIMED}:
            return HOLDS
        if outcomes == {OPPOSITE}:
            return CONTRADICTED
        return MIXED

    @property
    def why(self) -> str:
        """Why a claim is mixed or undecided: the pairs that do not go the way of the others."""
        verdict = self.verdict
        if verdict in (HOLDS, CONTRADICTED):
            return ""
        if self.p_value is None:
            untestable = [p.why for p in self.pairs if p.outcome == UNTESTABLE]
            return "; ".join(untestable) or "not testable: no metric with a direction"
        if verdict == UNDECIDED and all(p.outcome == NOISE for p in self.pairs):
            return "within seed noise after the Holm correction"
        # mixed: the pairs that disagree with the claim; undecided: those a failure blocks
        shown = BLOCKED if verdict == UNDECIDED else CLAIMED
        disagree = [p for p in self.pairs if (p.outcome == shown) == (verdict == UNDECIDED)]
        return "; ".join(p.why for p in disagree)

    @property
    def failed_better(self) -> int:
        return sum(self.sides[label].lost for label in self.claim.better if label in self.sides)

    @property
    def failed_worse(self) -> int:
        return sum(self.sides[label].lost for label in self.claim.worse if label in self.sides)


def claim_scoring(claim: ClaimConfig, metric: Metric) -> tuple[Callable[[float], float], bool]:
    """(score, lower_is_better): what the claim compares, and which way is better."""
    direction = claim.direction
    if direction is None:
        return metric.score, bool(metric.lower_is_better)
    if direction == "closer_to_target":
        return (lambda v: abs(v - metric.target)), True
    return (lambda v: v), direction == "lower"


def evaluate_claims(cells: pd.DataFrame, claims: list[ClaimConfig]) -> list[ClaimResult]:
    """Every claim tested on the cells (columns label, status, one per metric), pair by pair,
    with one Holm correction over the testable claims' largest pairwise p."""
    metrics = {m.key: m for m in metric_specs()}
    labels = list(dict.fromkeys(cells["label"]))
    counts = cell_counts(cells, labels) if labels else None
    results = []
    for claim in claims:
        metric = metrics.get(claim.metric)
        result = ClaimResult(claim, metric)
        results.append(result)
        if metric is None:
            continue
        result.sides = {
            label: _side(cells, counts, label, claim.metric) for label in claim.better + claim.worse
        }
        score, lower = claim_scoring(claim, metric)
        for better in claim.better:
            for worse in claim.worse:
                a = [score(v) for v in result.sides[better].values]
                b = [score(v) for v in result.sides[worse].values]
                pair = Pair(result.sides[better], result.sides[worse], welch_p_value(a, b))
                if pair.p_value is not None:
                    mean_a, mean_b = statistics.fmean(a), statistics.fmean(b)
                    pair.claimed_wins = mean_a < mean_b if lower else mean_a > mean_b
                result.pairs.append(pair)
        if all(p.p_value is not None for p in result.pairs):
            result.p_value = max(p.p_value for p in result.pairs)
    testable = [r for r in results if r.p_value is not None]
    if testable:
        adjusted = multipletests([r.p_value for r in testable], alpha=ALPHA, method="holm")[1]
        for result, p in zip(testable, adjusted, strict=True):
            result.adjusted_p = float(p)
            # every pair at its claim's Holm level: the factor its largest p was multiplied by
            factor = p / result.p_value if result.p_value > 0 else len(testable)
            for pair in result.pairs:
                pair.adjusted_p = min(1.0, pair.p_value * factor)
    return results


def _side(cells: pd.DataFrame, counts: pd.DataFrame | None, label: str, key: str) -> Side:
    """A variant's finished values of `key` and its failures. A finished seed without the value
    is a failure too: leaving it out would judge the variant on the seeds that produced one."""
    finished = cells[(cells["status"] == keys.STATUS_FINISHED) & (cells["label"] == label)]
    column = finished[key] if key in finished else pd.Series(dtype=float)
    values = [float(v) for v in pd.to_numeric(column, errors="coerce") if not math.isnan(v)]
    row = counts.loc[label] if counts is not None and label in counts.index else None
    return Side(
        label,
        values,
        failed=int(row["failed"] + row["diverged_attempts"]) if row is not None else 0,
        no_value=len(finished) - len(values),
        missing=int(row["missing"]) if row is not None else 0,
    )


def mean_ci(values: list[float]) -> str:
    """'0.123 ± 0.045 (3 seeds)', the mean with its 95% t-interval's half-width."""
    if not values:
        return "no finished seed"
    std = pd.Series([statistics.stdev(values) if len(values) > 1 else float("nan")])
    half = t_half_width(std, pd.Series([len(values)])).iloc[0]
    text = format_mean_ci(statistics.fmean(values), half, len(values))
    return text if len(values) == 1 else f"{text} ({len(values)} seeds)"


def _side_text(result: ClaimResult, labels: list[str]) -> str:
    """Each variant's own mean: a pooled mean would hide that the variants of a side differ."""
    if not result.sides:
        return "–"
    return "; ".join(f"{label}: {mean_ci(result.sides[label].values)}" for label in labels)


def _failed_text(result: ClaimResult) -> str:
    sides = result.sides.values()
    text = f"{result.failed_better} / {result.failed_worse}"
    no_value = sum(s.no_value for s in sides)
    if no_value:
        text += f" (incl. {no_value} finished without a value)"
    missing = [
        sum(result.sides[label].missing for label in labels if label in result.sides)
        for labels in (result.claim.better, result.claim.worse)
    ]
    if any(missing):
        text += f" (+ {missing[0]} / {missing[1]} missing)"
    return text


def claim_rows(results: list[ClaimResult]) -> list[dict]:
    """What the Claims section shows, one row per claim."""
    rows = []
    for r in results:
        metric, claim = r.metric, r.claim
        direction = metric.direction if metric else ""
        if metric and claim.direction is not None:
            direction = {
                "lower": "lower is better",
                "higher": "higher is better",
                "closer_to_target": f"closest to {metric.target:g} is best",
            }[claim.direction]
        # the pair behind the claim's p; none when the claim is not testable (one seed a side)
        tested = [pair for pair in r.pairs if pair.p_value is not None]
        largest = max(tested, key=lambda p: p.p_value) if r.p_value is not None and tested else None
        rows.append(
            {
                "name": claim.name,
                "source": claim.source,
                "metric": f"{metric.title} ({direction})" if metric else claim.metric,
                "better": ", ".join(claim.better),
                "worse": ", ".join(claim.worse),
                "better_mean": _side_text(r, claim.better),
                "worse_mean": _side_text(r, claim.worse),
                "p": _p(r.p_value) + (f" ({largest.name})" if largest and len(r.pairs) > 1 else ""),
                "adjusted_p": _p(r.adjusted_p),
                "verdict": r.verdict,
                "why": r.why,
                "failed": _failed_text(r),
            }
        )
    return rows


def _p(value: float | None) -> str:
    return "–" if value is None else f"{value:.2g}"


CLAIMS_NOTE = (
    "Hypotheses the suite declares, each an intersection-union test: every (better, worse) "
    "variant pair is compared with Welch's two-sided t-test over its per-seed values (never a "
    "side's variants pooled into one sample); the claim's p is its largest pairwise p, with one "
    "Holm-Bonferroni correction over the testable claims (a family of its own), and each pair "
    f"is judged at its claim's Holm level. Verdicts at α = {ALPHA}: *holds* (every pair "
    "significant in the claimed direction), *contradicted* (every pair significant the other "
    "way), *mixed* (pairs decided differently: the pairs that disagree are named), *undecided "
    "at these seeds* (no pair decided: within seed noise, not testable, or significant for a "
    "winner with failed or diverged seeds, which cannot win, or while a variant has seeds with "
    "no result yet, which may still turn it). A finished seed without a value of the metric "
    "counts as a failed seed. Each side shows every variant's own mean. Failed: failed or "
    "diverged seeds, or seeds without a value, of the better / worse side (+ missing: seeds "
    "with no result yet)."
)
