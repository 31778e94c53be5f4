"""The report's Search section: the protocol in words, the chosen setting of each variant, the
failed trials, and the figures over trials.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from bench import keys
from bench.data.datasets import VALIDATION_CAP, VALIDATION_SHARE
from bench.metrics import table
from bench.metrics.table import QUALITY, Metric, metric_specs
from bench.report import figures
from bench.report.load import Report
from bench.report.search import NOT_ENDED, SearchChoice, SearchReport, best_so_far
from bench.report.tables import DASH, _plain
from bench.suite.schema import BudgetConfig, SpaceEntry
from bench.suite.search import follow_up_seeds, trial_budget


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
    lower = table.selection_metrics().get(key)
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
    validation = (
        "Validation: the choice is made on validation images held out of the training split "
        "(seeded, class-stratified): the trials train without them and are scored on them "
        "only. The follow-up cells train on the same pool (the validation images still held "
        "out) and are scored on the evaluation split, which no choice has seen."
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
            validation,
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
        validation.replace(
            "validation images held out",
            f"{_validation_size(config.validation)} validation images held out",
        ),
        f"Seeds: trial n trains with seed {config.trial_seed} + n (seeds {first}–{last}); each "
        f"chosen setting is trained again with the follow-up seeds "
        f"{_seed_list(follow_up_seeds(suite))}, which never took part in choosing it. " + tables,
    ]


def _validation_size(requested: int | None) -> str:
    if requested is not None:
        return str(requested)
    return f"{VALIDATION_SHARE:.0%} (at most {VALIDATION_CAP})"


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
