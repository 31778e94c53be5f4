"""From a validated Suite to cells: variants from each model entry's grid, model options validated
by the registry, optimizer settings resolved per variant, and each cell's id.

A cell is one (dataset, model spec, budget, seed) to train and evaluate. Its id is a hash of its
fully resolved configuration (defaults filled in, model options validated by the registry), so a
rerun finds finished cells and a changed configuration is a new cell.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import string
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError

import models
from bench.data.config import DatasetConfig
from bench.metrics.settings import EVALUATION_NEUTRAL_DEFAULTS, EvaluationConfig
from bench.suite import plugins
from bench.suite.schema import (
    IDENTITY_NEUTRAL_DEFAULTS,
    OPTIMIZER_FIELDS,
    SAFE_LABEL,
    BudgetConfig,
    ComputeConfig,
    OptimizerConfig,
    Suite,
    SuiteError,
    VariantConfig,
    describe_error,
)

# Bump when a change to the training or evaluation code makes old results incomparable.
# 2: budgets count generator updates, per-variant optimizer settings, interpolation and mode
#    metrics redefined, decoder batch-norm recalibrated before evaluation, seeded subsets.
# 3: density and coverage; interpolation degenerate below 10% of the real scale, with reach;
#    confident mode coverage with an unrecognised bin; the WGAN-GP VAE-GAN's penalty on random
#    real/fake pairs; a search's trials and follow-ups train without its validation images.
CODE_VERSION = "3"
VALIDATION, EVAL = "validation", "eval"  # what a search's cell is scored on


@dataclass(frozen=True)
class Variant:
    label: str
    model: str
    options: dict[str, Any]  # fully resolved: every option with its value or default
    # resolved optimizer settings: lr_g, betas, n_critic (1 where the loss has no critic steps)
    # and lr_d (only for variants with a discriminator)
    optimizer: dict[str, Any]
    # the plugin that registered the model, its file (or module) name and content hash: part of
    # the cell's id, so an edited plugin makes new cells; None for a built-in model
    plugin: dict[str, str] | None = None


@dataclass(frozen=True)
class Cell:
    suite: str
    dataset: DatasetConfig
    budget: BudgetConfig
    evaluation: EvaluationConfig
    variant: Variant
    seed: int
    compute: ComputeConfig = ComputeConfig()
    # a search's cells: the validation set held out of the training split (its size, or "auto"
    # for the default rule, and its seed) and which images the cell is scored on: "validation"
    # (a trial, where the choice is made) or "eval" (a follow-up seed, what the report shows).
    # Part of the identity; None for the cells of a suite without a search.
    validation: dict[str, Any] | None = None
    # not part of the identity: which trial of its variant's search this cell is (None: a cell of
    # the suite proper), and extra tags for its run (the parent run of a trial)
    trial: int | None = None
    run_tags: tuple[tuple[str, str], ...] = ()

    def config(self) -> dict[str, Any]:
        """The resolved configuration that defines this cell (and its id)."""
        # where the files live is not identity; fields at their defaults stay out, so that adding
        # a field leaves the ids of existing cells as they were
        dataset = self.dataset.model_dump(exclude={"root"})
        for name in IDENTITY_NEUTRAL_DEFAULTS:
            if dataset[name] == DatasetConfig.model_fields[name].default:
                del dataset[name]
        compute = {}
        settings = self.compute.model_dump()
        # The memory format computes the same losses within 1e-3 (as two CPU kinds' kernels do):
        # auto (the default: on for CPUs) and false leave the id as it was before the switch
        # existed, and each run records the format it used (tag compute.memory_format); an
        # explicit true keeps the ids its cells have had since it was added.
        if settings["channels_last"] is not True:
            del settings["channels_last"]
        if settings != {"precision": "fp32", "compile": False}:
            compute["compute"] = settings
            if self.compute.precision == "bf16":
                # bf16 steps before revision 2 ran the generator against a stale discriminator
                # (autocast's weight cache, bench/run/train.py autocast): new ids, not skipped
                compute["compute"]["bf16_revision"] = 2
        # how often it logs and checkpoints does not change what a cell computes; the optimizer
        # settings are the variant's own (resolved), not the budget's defaults
        budget = self.budget.model_dump(
            exclude={"log_every", "checkpoint_every", *OPTIMIZER_FIELDS}
        )
        evaluation = self.evaluation.model_dump()
        for name in EVALUATION_NEUTRAL_DEFAULTS:
            if evaluation[name] == EvaluationConfig.model_fields[name].default:
                del evaluation[name]
        return (
            {
                "dataset": dataset,
                "budget": budget,
                "optimizer": self.variant.optimizer,
                "evaluation": evaluation,
                "model": self.variant.model,
                "options": self.variant.options,
                "seed": self.seed,
                "code_version": CODE_VERSION,
            }
            | compute
            | ({"validation": self.validation} if self.validation is not None else {})
            | ({"plugin": self.variant.plugin} if self.variant.plugin is not None else {})
        )

    @property
    def scored_on_validation(self) -> bool:
        """A search trial: trained without the validation images and scored on them."""
        return self.validation is not None and self.validation["scored_on"] == VALIDATION

    @property
    def id(self) -> str:
        return _digest(self.config())

    @property
    def variant_id(self) -> str:
        """The id of the resolved configuration without the seed: the cells of one variant (its
        seeds) share it, and a changed setting gives another."""
        return _digest({k: v for k, v in self.config().items() if k != "seed"})

    def hparams(self) -> models.Hparams:
        budget, optimizer = self.budget, self.variant.optimizer
        return models.Hparams(
            latent_dim=budget.latent_dim,
            width=budget.width,
            lr_g=optimizer["lr_g"],
            lr_d=optimizer.get("lr_d", budget.lr_d),
            betas=tuple(optimizer["betas"]),
            n_critic=optimizer["n_critic"],
        )

    @property
    def name(self) -> str:
        if self.trial is not None:
            return f"{self.variant.label}/trial{self.trial}"
        return f"{self.variant.label}/seed{self.seed}"

    @property
    def run_name(self) -> str:
        if self.trial is not None:
            return f"{self.variant.label}-t{self.trial}"
        return f"{self.variant.label}-s{self.seed}"


def _digest(config: dict[str, Any]) -> str:
    canonical = json.dumps(config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def variants(suite: Suite) -> list[Variant]:
    """Expand each model entry's grid into variants with resolved options and unique labels."""
    expanded = [
        resolve_variant(suite, entry, chosen, where) for where, entry, chosen in _combos(suite)
    ]
    labels = [v.label for v in expanded]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise SuiteError(
            f"duplicate variant label {duplicates[0]!r}: give each model entry a distinct label "
            "(use {option} placeholders for grids)"
        )
    return expanded


def plugins_used(suite: Suite) -> list[plugins.Plugin]:
    """The plugins that registered the suite's models (source included): what a worker process
    installs before it resolves them."""
    models_used = dict.fromkeys(variant.model for variant in variants(suite))
    found = [plugins.plugin_of(model) for model in models_used]
    return list({plugin.sha256: plugin for plugin in found if plugin is not None}.values())


def _combos(suite: Suite) -> list[tuple[str, VariantConfig, dict[str, Any]]]:
    """(where, model entry, grid values chosen) for every grid combination, in file order."""
    combos = []
    for index, entry in enumerate(suite.models):
        where = f"models[{index}] ({entry.label})"
        overlap = set(entry.grid) & set(entry.options)
        if overlap:
            raise SuiteError(f"{where}: option {sorted(overlap)[0]!r} is in both options and grid")
        for name, values in entry.grid.items():
            if not values:
                raise SuiteError(f"{where}: grid.{name} must list at least one value")
        names = list(entry.grid)
        for combo in itertools.product(*(entry.grid[k] for k in names)):
            combos.append((where, entry, dict(zip(names, combo, strict=True))))
    return combos


def resolve_variant(
    suite: Suite,
    entry: VariantConfig,
    chosen: dict[str, Any],
    where: str,
    searched: dict[str, Any] | None = None,
) -> Variant:
    """One variant: the entry's options and optimizer with the grid's `chosen` values, then a
    search trial's `searched` values (only the names this variant reads) over them. The label
    comes from the grid values alone: every trial of a variant carries the variant's label."""
    searched = searched or {}
    model_chosen = {k: v for k, v in chosen.items() if k not in OPTIMIZER_FIELDS}
    model_searched = {k: v for k, v in searched.items() if k not in OPTIMIZER_FIELDS}
    options = _validate_options(entry.model, {**entry.options, **model_chosen}, where)
    if model_searched:
        read = {k: v for k, v in model_searched.items() if k in type(options).model_fields}
        options = _validate_options(
            entry.model, {**entry.options, **model_chosen, **read}, f"{where}, searched"
        )
    optimizer = _resolve_optimizer(suite.budget, entry, chosen | searched, options, where)
    label = _format_label(entry.label, chosen, where)
    plugin = plugins.identity_of(entry.model)
    return Variant(label, entry.model, options.model_dump(), optimizer, plugin)


def _validate_options(model: str, options: dict[str, Any], where: str) -> models.ModelOptions:
    try:
        return models.validate_options(model, options)
    except models.ModelConfigError as err:
        allowed = ""
        if "unknown option" in str(err):
            names = [row[0] for row in models.option_table(model)]
            allowed = f"; {model} options: {', '.join(names)} (see `bench models`)"
        raise SuiteError(f"{where}: {err}{allowed}") from None


def _resolve_optimizer(
    budget: BudgetConfig,
    entry: VariantConfig,
    chosen: dict[str, Any],
    options: models.ModelOptions,
    where: str,
) -> dict[str, Any]:
    """The optimizer settings a variant trains with: the budget's, overridden by the entry's
    `optimizer:` and then by its grid. n_critic is 1 for a loss without critic steps and lr_d is
    left out for a variant without a discriminator, so that a setting the variant never reads
    cannot split its cells or show in its report row."""
    overrides = {k: v for k, v in entry.optimizer.model_dump().items() if v is not None}
    overrides |= {k: v for k, v in chosen.items() if k in OPTIMIZER_FIELDS}
    try:
        merged = OptimizerConfig.model_validate(
            {name: overrides.get(name, getattr(budget, name)) for name in OPTIMIZER_FIELDS}
        )
    except ValidationError as err:
        raise SuiteError(f"{where}: optimizer {describe_error(err)}") from None
    cls = models.model_class(entry.model)
    resolved = {
        "lr_g": merged.lr_g,
        "betas": list(merged.betas),
        "n_critic": merged.n_critic if cls.uses_critic_steps(options) else 1,
    }
    if cls.has_discriminator:
        resolved["lr_d"] = merged.lr_d
    return resolved


def _format_label(template: str, chosen: dict[str, Any], where: str) -> str:
    """Fill {option} placeholders; grid options without a placeholder are appended as -value."""
    fields = {name for _, name, _, _ in string.Formatter().parse(template) if name}
    unknown = fields - set(chosen)
    if unknown:
        raise SuiteError(
            f"{where}: label placeholder {{{sorted(unknown)[0]}}} is not a grid option"
        )
    label = template.format(**{k: str(v) for k, v in chosen.items()})
    unnamed = [str(value) for key, value in chosen.items() if key not in fields]
    if unnamed:
        label += "-" + "-".join(unnamed)
    if not SAFE_LABEL.fullmatch(label):
        raise SuiteError(f"{where}: label {label!r} may hold only letters, digits and _ . - + =")
    return label


def expand(suite: Suite) -> list[Cell]:
    """Every variant x seed, variants in file order, seeds in file order within a variant."""
    return [
        Cell(
            suite.name, suite.dataset, suite.budget, suite.evaluation, variant, seed, suite.compute
        )
        for variant in variants(suite)
        for seed in suite.seeds
    ]
