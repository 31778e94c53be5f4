"""The search between its two stages: each variant's trial outcomes read back from the store, and
the choice (bench/suite/search.py `best_trial`) recorded on the variant's parent run.
"""

from __future__ import annotations

import math

from bench import keys, tracking
from bench.suite.expand import Cell
from bench.suite.schema import Suite
from bench.suite.search import TrialResult, searched_values


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
                copying = run.data.metrics.get(keys.DATA_COPYING)  # best_trial's guard
                results.append(
                    TrialResult(cell, float(value), None, run.info.run_id, copying=copying)
                )
            continue
        run = tracking.failed_run(client, experiment, cell.id)
        if run is not None:
            reason = run.data.tags.get(keys.TAG_FAILURE, "failed").splitlines()[0]
            results.append(TrialResult(cell, None, reason, run.info.run_id))
    return results


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
