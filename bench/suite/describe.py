"""A suite in words: what `bench validate` and `bench run --dry-run` print, without running it."""

from __future__ import annotations

from pathlib import Path

from bench.suite import plugins
from bench.suite.expand import Cell, expand
from bench.suite.schema import BudgetConfig, Suite
from bench.suite.search import follow_up_seeds, trial_budget, trial_cells


def suite_text(
    suite_file: str | Path, overrides: tuple[str, ...], plugin_files: tuple[str, ...] = ()
) -> str:
    """The suite as the user gave it: the file, and the --set overrides and --plugin files it ran
    with."""
    text = Path(suite_file).read_text()
    if overrides:
        text += "\n# run with overrides:\n" + "".join(f"#   --set {o}\n" for o in overrides)
    if plugin_files:
        text += "\n# run with plugins:\n" + "".join(f"#   --plugin {p}\n" for p in plugin_files)
    return text


def budget_text(budget: BudgetConfig) -> str:
    unit = "generator updates" if budget.parity == "generator_updates" else "batches"
    amount = budget.steps or f"{budget.epochs} epochs of"
    return f"{amount} {unit}"


def validated(suite_file: str, suite: Suite) -> str:
    """The line `bench validate` prints for a valid suite: how many cells of what."""
    cells = expand(suite)
    labels = sorted({cell.variant.label for cell in cells})
    if suite.search is None:
        return (
            f"{suite_file}: ok, suite {suite.name!r}: {len(labels)} variants x "
            f"{len(suite.seeds)} seeds = {len(cells)} cells on {suite.dataset.name}"
        ) + plugin_note(cells)
    seeds = follow_up_seeds(suite)
    return (
        f"{suite_file}: ok, suite {suite.name!r}: {len(labels)} variants x "
        f"{suite.search.trials} trials, then {len(seeds)} seeds of each best = "
        f"{len(labels) * (suite.search.trials + len(seeds))} cells on {suite.dataset.name}"
    ) + plugin_note(cells)


def plugin_note(cells: list[Cell]) -> str:
    """A line per model of a plugin: where it comes from and the hash its cells' ids hold."""
    used = dict.fromkeys(cell.variant.model for cell in cells if cell.variant.plugin)
    found = [(model, plugins.plugin_of(model)) for model in used]
    return "".join(
        f"\n  model {model!r}: plugin {plugin.origin} (sha256 {plugin.sha256[:12]}...)"
        for model, plugin in found
        if plugin is not None
    )


def cell_lines(cells: list[Cell]) -> list[str]:
    lines = []
    for cell in cells:
        options = ", ".join(f"{k}={v}" for k, v in cell.variant.options.items())
        optimizer = ", ".join(f"{k} {v}" for k, v in cell.variant.optimizer.items())
        lines.append(
            f"  {cell.id}  {cell.name:<32} {cell.variant.model}({options}); Adam {optimizer}"
        )
    return lines


def dry_run(suite: Suite) -> list[str]:
    """The cells `bench run` would run: with a search, every trial, then the follow-up cells
    (which setting they train depends on the trials' results)."""
    if suite.search is None:
        cells = expand(suite)
        budget = budget_text(suite.budget)
        return [
            f"suite {suite.name}: {len(cells)} cells; budget {budget} per cell",
            *cell_lines(cells),
        ]
    search = suite.search
    trials = trial_cells(suite)
    lines = [
        f"suite {suite.name}: stage 1, a search: {len(trials)} trials ({search.trials} per "
        f"variant, Optuna RandomSampler seed {search.seed}), budget "
        f"{budget_text(trial_budget(suite))} per trial; trial n trains with seed "
        f"{search.trial_seed} + n",
        *cell_lines(trials),
    ]
    seeds = follow_up_seeds(suite)
    labels = list(dict.fromkeys(cell.variant.label for cell in trials))
    lines.append(
        f"stage 2: per variant, the trial with the best {search.select} (failed trials count as "
        f"the worst, ties to the lower trial number), trained with seeds {seeds} at budget "
        f"{budget_text(suite.budget)}: {len(labels) * len(seeds)} cells"
    )
    for label in labels:
        lines.append(f"  {label}/seed{{{','.join(map(str, seeds))}}}  best trial's setting")
    return lines
