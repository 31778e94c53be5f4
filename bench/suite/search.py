"""The `search:` block: the draws (Optuna's RandomSampler, the same draws for every variant),
the trial cells, the follow-up cells of a chosen trial, and the selection rule.

The protocol is Lucic et al. 2018 ("Are GANs Created Equal?"): every variant gets the same number
of trials, the best by the selection metric is chosen, and fresh seeds of it make the suite's
comparison. A trial that failed (raised, diverged, or finished without the metric) counts as the
worst value: it is never chosen and never silently dropped. Ties go to the lower trial number, so
the choice is a pure function of the trials' values (`best_trial`).

Two guards keep a search from choosing what a degenerate generator wins. A trial that copies its
training set (Meehan et al.'s C_T below COPYING_LIMIT) is never chosen, whatever its FID: a copy
of the training images scores a near-perfect FID. And `select: recon_mse` is refused while the
space holds an option that trades samples for reconstruction (RECON_TRADES): recon_mse would pick
the setting that gives up on sampling (a tiny KL weight, a small pixel sigma, a VAE-GAN's
reconstruction weight at its largest).
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

import models
from bench import keys
from bench.metrics import table
from bench.suite.expand import EVAL, VALIDATION, Cell, _combos, _digest, resolve_variant
from bench.suite.schema import (
    OPTIMIZER_FIELDS,
    BudgetConfig,
    SearchConfig,
    Suite,
    SuiteError,
    describe_error,
)


@dataclass(frozen=True)
class TrialResult:
    cell: Cell
    value: float | None  # the selection metric; None when the trial failed
    failure: str | None = None  # why it counts as the worst value
    run_id: str | None = None
    copying: float | None = None  # the trial's data_copying_ct (C_T), where it has one


# C_T is a z-score: -3 is three standard errors closer to the training set than held-out images
COPYING_LIMIT = -3.0
RECON_TRADES = ("kl_weight", "pixel_sigma", "gamma")


def copies(result: TrialResult) -> bool:
    """Whether the trial copies its training set (C_T below COPYING_LIMIT)."""
    return result.copying is not None and result.copying < COPYING_LIMIT


def best_trial(results: list[TrialResult], lower_is_better: bool) -> TrialResult | None:
    """The trial with the best value, ties to the lower trial number, among the trials that
    ended with a value and do not copy their training set; None when there is none."""
    ended = [r for r in results if r.value is not None and not copies(r)]
    if not ended:
        return None
    sign = 1 if lower_is_better else -1
    return min(ended, key=lambda r: (sign * r.value, r.cell.trial))


# ---- search stages (Lucic et al. 2018: equal random search per variant, then seeds of the best)


def search_draws(search: SearchConfig) -> list[dict[str, Any]]:
    """The settings of trials 0..trials-1. Optuna's RandomSampler, seeded with search.seed, draws
    the whole space for every trial, so every variant is tried on the same draws (a variant uses
    the names it reads): the same seed gives the same trials, on any machine and after a resume."""
    import optuna
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    distributions = {}
    for name, entry in search.space.items():
        if entry.loguniform is not None:
            distributions[name] = FloatDistribution(*entry.loguniform, log=True)
        elif entry.uniform is not None:
            distributions[name] = FloatDistribution(*entry.uniform)
        elif entry.int is not None:
            distributions[name] = IntDistribution(*entry.int)
        else:  # Optuna's categories are scalars: draw an index, so lists (betas) can be choices
            distributions[name] = CategoricalDistribution(list(range(len(entry.choice))))
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=search.seed))
    draws = []
    for _ in range(search.trials):
        params = study.ask(distributions).params
        draws.append(
            {
                name: search.space[name].choice[value]
                if search.space[name].choice is not None
                else value
                for name, value in params.items()
            }
        )
    return draws


def trial_budget(suite: Suite) -> BudgetConfig:
    """The suite's budget with search.budget's overrides: what each trial trains for."""
    overrides = dict(suite.search.budget)
    optimizer = sorted(set(overrides) & set(OPTIMIZER_FIELDS))
    if optimizer:
        raise SuiteError(
            f"search.budget.{optimizer[0]}: optimizer settings are searched in search.space "
            "or fixed in budget / a model's optimizer, not overridden for the trials"
        )
    base = suite.budget.model_dump()
    if {"steps", "epochs"} & set(overrides):
        base.pop("steps"), base.pop("epochs")
    try:
        return BudgetConfig.model_validate(base | overrides)
    except ValidationError as err:
        raise SuiteError(f"search.budget: {describe_error(err)}") from None


def follow_up_seeds(suite: Suite) -> list[int]:
    search = suite.search
    if search is None or search.seeds_of_best is None:
        return list(suite.seeds)
    return list(range(search.seeds_of_best))


def _reads(model: str, options: dict[str, Any], name: str) -> bool:
    """Whether a variant of `model` with these (resolved) options reads the searched `name`."""
    cls = models.model_class(model)
    if name == "lr_d":
        return cls.has_discriminator
    if name == "n_critic":
        return cls.uses_critic_steps(models.validate_options(model, options))
    return name in OPTIMIZER_FIELDS or name in options


def validation_identity(suite: Suite, scored_on: str) -> dict[str, Any]:
    """Cell.validation of a search's cells: the held-out set (its size or the default rule, and
    its seed) and what the cell is scored on."""
    size = suite.search.validation
    return {
        "size": size if size is not None else "auto",
        "seed": suite.dataset.subset_seed,
        "scored_on": scored_on,
    }


def trial_cells(suite: Suite) -> list[Cell]:
    """Stage 1 of a search: `trials` cells per variant, variants in file order. Trial n of every
    variant trains on draw n with seed trial_seed + n, without the validation images, and is
    scored on them."""
    search = suite.search
    draws = search_draws(search)
    budget = trial_budget(suite)
    cells = []
    for where, entry, chosen in _combos(suite):
        base = resolve_variant(suite, entry, chosen, where)
        for number, draw in enumerate(draws):
            options = dict(base.options)
            searched = {k: v for k, v in draw.items() if k not in OPTIMIZER_FIELDS}
            options |= {k: v for k, v in searched.items() if k in options}
            read = {k: v for k, v in draw.items() if _reads(entry.model, options, k)}
            variant = resolve_variant(suite, entry, chosen, where, read)
            cells.append(
                Cell(
                    suite.name,
                    suite.dataset,
                    budget,
                    suite.evaluation,
                    variant,
                    search.trial_seed + number,
                    suite.compute,
                    validation=validation_identity(suite, VALIDATION),
                    trial=number,
                )
            )
    return cells


def searched_values(cell: Cell, suite: Suite) -> dict[str, Any]:
    """The values of the searched names a trial (or follow-up) cell trains with, for the names
    its variant reads."""
    variant = cell.variant
    return {
        name: variant.optimizer[name] if name in OPTIMIZER_FIELDS else variant.options[name]
        for name in suite.search.space
        if _reads(variant.model, variant.options, name)
    }


def follow_up_cells(suite: Suite, best: Cell) -> list[Cell]:
    """Stage 2 of a search: the best trial's setting at the suite's budget, with fresh seeds,
    trained on the same pool as the trials (the validation images held out) and scored on the
    evaluation split, which no choice has seen."""
    return [
        Cell(
            suite.name,
            suite.dataset,
            suite.budget,
            suite.evaluation,
            best.variant,
            seed,
            suite.compute,
            validation=validation_identity(suite, EVAL),
        )
        for seed in follow_up_seeds(suite)
    ]


def search_id(suite: Suite, trials: list[Cell]) -> str:
    """Identity of one variant's search: its trials' ids (which hold the drawn settings, the
    trial budget and seeds) and the selection metric. A changed space or budget is a new search
    with a new parent run."""
    return _digest({"select": suite.search.select, "trials": [cell.id for cell in trials]})


def check_search(suite: Suite) -> None:
    """Everything about a `search:` block that pydantic alone cannot check."""
    search = suite.search
    selectable = table.selection_metrics()
    if search.select not in selectable:
        raise SuiteError(
            f"search.select: {search.select!r} is not a metric a search can select by; "
            f"use one of {', '.join(selectable)}"
        )
    combos = _combos(suite)
    if search.select == keys.RECON_MSE:
        without = [e.label for _, e, _ in combos if not models.model_class(e.model).has_encoder]
        if without:
            raise SuiteError(
                f"search.select: recon_mse needs an encoder, which {without[0]} has not; "
                "select by a metric every variant has (e.g. fid_domain)"
            )
    trades = [name for name in RECON_TRADES if name in search.space]
    if search.select == keys.RECON_MSE and trades:
        raise SuiteError(
            f"search.select: recon_mse with {trades[0]} in search.space would choose the "
            "setting that trades samples for reconstruction; select by fid_domain (or fix "
            f"{trades[0]})"
        )
    space = next(m.space for m in table.metric_specs() if m.key == search.select)
    if space is not None and space not in suite.evaluation.feature_extractors:
        raise SuiteError(
            f"search.select: {search.select} needs evaluation.feature_extractors to include "
            f"{space!r}"
        )
    known = set(OPTIMIZER_FIELDS)
    for _, entry, _ in combos:
        known |= {row[0] for row in models.option_table(entry.model)}
    for name in search.space:
        if name not in known:
            guess = difflib.get_close_matches(name, sorted(known), n=1)
            hint = f" (did you mean '{guess[0]}'?)" if guess else ""
            raise SuiteError(
                f"search.space.{name}: no variant of this suite has it{hint}; searchable: "
                f"{', '.join(sorted(known))}"
            )
        for where, entry, chosen in combos:
            if name in entry.options or name in chosen:
                raise SuiteError(
                    f"search.space.{name}: {where} fixes it (options or grid); "
                    "search it or fix it, not both"
                )
    trial_seeds = range(search.trial_seed, search.trial_seed + search.trials)
    clash = sorted(set(trial_seeds) & set(follow_up_seeds(suite)))
    if clash:
        raise SuiteError(
            f"search.trial_seed: trial seeds {trial_seeds.start}..{trial_seeds.stop - 1} include "
            f"follow-up seed {clash[0]}; the best setting's numbers must come from fresh seeds, "
            "not the draw that selected it (raise trial_seed)"
        )
    trial_cells(suite)  # draws every trial: a drawn value a variant refuses is an error now
