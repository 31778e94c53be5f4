"""Choosing each variant's best trial of a search, and recording the choice on its parent run.

The protocol is Lucic et al. 2018 ("Are GANs Created Equal?"): every variant gets the same number
of trials (bench/suite.py draws them), the best by the selection metric is chosen, and fresh seeds
of it make the suite's comparison. A trial that failed (raised, diverged, or finished without the
metric) counts as the worst value: it is never chosen and never silently dropped. Ties go to the
lower trial number, so the choice is a pure function of the trials' values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from . import keys, tracking
from .suite import Cell, Suite, searched_values


@dataclass(frozen=True)
class TrialResult:
    cell: Cell
    value: float | None  # the selection metric; None when the trial failed
    failure: str | None = None  # why it counts as the worst value
    run_id: str | None = None


def trial_results(client, experiment: str, cells: list[Cell], metric: str) -> list[TrialResult]:
    """The outcome of every trial in `cells` that has ended (finished or failed), in trial order;
    trials with no ended run (not run yet, interrupted) are left out."""
    results = []
    for cell in cells:
        run = tracking.finished_run(client, experiment, cell.id)
        if run is not None:
            value = run.data.metrics.get(metric)
            if value is None or not math.isfinite(value):
                results.append(
                    TrialResult(cell, None, f"finished without a finite {metric}", run.info.run_id)
                )
            else:
                results.append(TrialResult(cell, float(value), None, run.info.run_id))
            continue
        run = tracking.failed_run(client, experiment, cell.id)
        if run is not None:
            reason = run.data.tags.get(keys.TAG_FAILURE, "failed").splitlines()[0]
            results.append(TrialResult(cell, None, reason, run.info.run_id))
    return results


def best_trial(results: list[TrialResult], lower_is_better: bool) -> TrialResult | None:
    """The trial with the best value, ties to the lower trial number; None when all failed."""
    ended = [r for r in results if r.value is not None]
    if not ended:
        return None
    sign = 1 if lower_is_better else -1
    return min(ended, key=lambda r: (sign * r.value, r.cell.trial))


def log_choice(
    client, parent_run: str, suite: Suite, results: list[TrialResult], best: TrialResult | None
) -> None:
    """On the variant's parent run: the chosen trial, its searched values (params best.<name>),
    its selection metric, and how many trials failed; the parent ends FINISHED (FAILED when every
    trial failed, so nothing was chosen)."""
    failed = sum(1 for r in results if r.value is None)
    tracking.set_tag(client, parent_run, keys.TAG_TRIALS_FAILED, str(failed))
    if best is None:
        tracking.fail(client, parent_run, f"all {len(results)} trials failed: nothing to choose")
        return
    tracking.set_tag(client, parent_run, keys.TAG_BEST_TRIAL, str(best.cell.trial))
    logged = client.get_run(parent_run).data.params
    params = {
        keys.SEARCH_PARAM_PREFIX + name: str(value)
        for name, value in searched_values(best.cell, suite).items()
    }
    for name, value in params.items():
        if name not in logged:  # a rerun that chose the same trial logs nothing twice
            client.log_param(parent_run, name, value)
    tracking.log_metrics(client, parent_run, {keys.best_key(suite.search.select): best.value})
    tracking.finish(client, parent_run)
