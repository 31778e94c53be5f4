"""The report's Published results: a suite's `published:` values (bench/suite/published.py) beside
the suite's own mean ± 95% CI over its finished seeds, with every protocol difference named:
those the runs themselves show (samples per value, the reference split and its size) found here,
the rest as the suite declares them. Side by side only, never a test: a published number is not a
sample of this harness's seeds, and a search's best is not a mean over seeds.
"""

from __future__ import annotations

import json

import pandas as pd
import yaml
from mlflow.entities import Run
from pydantic import ValidationError

from bench import keys
from bench.metrics.table import metric_specs
from bench.report.stats import CONFIDENCE, summarize
from bench.report.tables import DASH, format_mean_ci
from bench.suite.published import PublishedConfig


def declared_published(suite_text: str | None) -> list[PublishedConfig]:
    """The `published:` blocks of the suite file logged with the runs (none without one)."""
    if not suite_text:
        return []
    try:
        raw = yaml.safe_load(suite_text) or {}
        return [PublishedConfig.model_validate(p) for p in raw.get("published", [])]
    except (yaml.YAMLError, ValidationError, AttributeError, TypeError):
        return []  # a suite text bench validate would refuse: nothing declared to show


def published_sections(
    cells: pd.DataFrame, variants: list[str], runs: list[Run], blocks: list[PublishedConfig]
) -> list[dict]:
    """One section per block: its rows (variant, ours, theirs, seeds) and the differences."""
    specs = {spec.key: spec for spec in metric_specs()}
    used = _finished_runs(cells, runs)
    sections = []
    for block in blocks:
        spec = specs.get(block.metric)
        if spec is None:  # a metric this version of the harness no longer has
            continue
        summary = summarize(cells, [spec], variants) if block.metric in cells else None
        rows, our_means = [], {}
        for label, theirs in block.values.items():
            ours, seeds = DASH, 0
            if summary is not None and label in summary.index:
                seeds = int(summary.loc[label, (block.metric, "n")])
                if seeds:
                    our_means[label] = float(summary.loc[label, (block.metric, "mean")])
                ours = format_mean_ci(
                    summary.loc[label, (block.metric, "mean")],
                    summary.loc[label, (block.metric, "ci")],
                    seeds,
                )
            spread = f" ± {theirs.sd:g}" if theirs.sd is not None else ""
            rows.append(
                {"label": label, "ours": ours, "seeds": seeds, "theirs": f"{theirs.mean:g}{spread}"}
            )
        sections.append(
            {
                "title": spec.title,
                "metric": block.metric,
                "source": block.source,
                "statistic": block.statistic,
                "ours_statistic": f"mean ± half-width of the {CONFIDENCE:.0%} t-interval over "
                "finished seeds",
                "rows": rows,
                "agreement": agreement(
                    our_means, {k: v.mean for k, v in block.values.items()}, spec.lower_is_better
                ),
                "differences": protocol_differences(block, used) + block.differences,
                "note": block.note,
            }
        )
    return sections


def agreement(ours: dict[str, float], theirs: dict[str, float], lower: bool | None) -> list[str]:
    """Whether our means tell the paper's story, in sentences: the ordering of the variants that
    have our values (best first) on both sides and the pairs that swap, the gap between every two
    of them on both sides (whether its sign agrees, and our size against theirs), and each
    variant's value against theirs."""
    shared = [label for label in theirs if label in ours]
    missing = [label for label in theirs if label not in ours]
    lines = []
    if missing:
        lines.append("No value of ours yet for " + ", ".join(missing) + ": left out below.")
    if len(shared) < 2:
        lines.append("Ordering and gaps need two variants with values on both sides.")
    else:
        sign = 1 if lower is not False else -1
        mine = sorted(shared, key=lambda label: sign * ours[label])
        paper = sorted(shared, key=lambda label: sign * theirs[label])
        swaps = [
            f"{a} vs {b}"
            for i, a in enumerate(paper)
            for b in paper[i + 1 :]
            if (ours[a] - ours[b]) * (theirs[a] - theirs[b]) < 0
        ]
        order = " then ".join
        verdict = "the same" if not swaps else "differs: " + ", ".join(swaps) + " swap"
        lines.append(f"Ordering, best first: ours {order(mine)}; theirs {order(paper)}: {verdict}.")
        for i, a in enumerate(paper):
            for b in paper[i + 1 :]:
                our_gap, their_gap = ours[b] - ours[a], theirs[b] - theirs[a]
                lines.append(
                    f"Gap {b} − {a}: ours {our_gap:+.3g}, theirs {their_gap:+.3g}: "
                    f"{_gap_verdict(our_gap, their_gap)}."
                )
    for label in shared:
        difference = ours[label] - theirs[label]
        ratio = f" ({ours[label] / theirs[label]:.2f}x theirs)" if theirs[label] else ""
        lines.append(f"{label}: ours {ours[label]:.3g}, theirs {theirs[label]:g}: "
                     f"{difference:+.3g}{ratio}.")  # fmt: skip
    return lines


def _gap_verdict(ours: float, theirs: float) -> str:
    """Whether a gap agrees: its sign on both sides, and our size against theirs."""
    if ours * theirs > 0:
        return f"same sign, {ours / theirs:.2f}x theirs"
    if ours * theirs < 0:
        return "opposite sign"
    return "a tie on one side"


def protocol_differences(block: PublishedConfig, runs: list[Run]) -> list[str]:
    """The declared protocol against what the runs did: samples per value, the reference split
    and how many of its images; one sentence per difference (or per fact the runs lack)."""
    protocol, differences = block.protocol, []
    ours = {
        "samples": _distinct(run.data.params.get("evaluation.num_samples") for run in runs),
        "reference": _distinct(run.data.params.get("dataset.eval_split") for run in runs),
        "reference_images": _distinct(str(_scored_images(run)) for run in runs),
    }
    words = {
        "samples": "generated images per value",
        "reference": "reference split",
        "reference_images": "reference images",
    }
    for field, theirs in protocol.model_dump().items():
        if theirs is None:
            continue
        if ours[field] is None:
            differences.append(f"{words[field]}: theirs {theirs}; ours not recorded by the runs")
        elif ours[field] != str(theirs):
            differences.append(f"{words[field]}: theirs {theirs}; ours {ours[field]}")
    return differences


def _scored_images(run: Run) -> int | None:
    """How many images the run was scored against: its evaluation dataset input's size."""
    inputs = getattr(run, "inputs", None)
    for dataset_input in getattr(inputs, "dataset_inputs", None) or []:
        contexts = {tag.value for tag in dataset_input.tags if tag.key == "mlflow.data.context"}
        if keys.DATASET_EVALUATION in contexts:
            try:
                return int(json.loads(dataset_input.dataset.profile)["num_images"])
            except (TypeError, ValueError, KeyError):
                return None
    return None


def _distinct(values) -> str | None:
    """The one value the runs agree on, "mixed: a, b" when they differ, None when none has it."""
    present = sorted({v for v in values if v not in (None, "", "None")})
    if not present:
        return None
    return present[0] if len(present) == 1 else "mixed: " + ", ".join(present)


def _finished_runs(cells: pd.DataFrame, runs: list[Run]) -> list[Run]:
    finished = set(cells.loc[cells["status"] == keys.STATUS_FINISHED, "run_id"].dropna())
    return [run for run in runs if run.info.run_id in finished]
