"""Suite files: the YAML schema, its validation, and expansion into cells.

A cell is one (dataset, model spec, budget, seed) to train and evaluate. Its id is a hash of its
fully resolved configuration (defaults filled in, model options validated by the registry), so a
rerun finds finished cells and a changed configuration is a new cell.

Every error a user can cause ends as a SuiteError: one line naming the file and field.
"""

from __future__ import annotations

import difflib
import hashlib
import itertools
import json
import re
import string
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import models

from . import keys
from .preprocess import Preprocessing

# Bump when a change to the training or evaluation code makes old results incomparable.
# 2: budgets count generator updates, per-variant optimizer settings, interpolation and mode
#    metrics redefined, decoder batch-norm recalibrated before evaluation, seeded subsets.
CODE_VERSION = "2"

SAFE_LABEL = re.compile(r"[A-Za-z0-9_=+-][A-Za-z0-9_.=+-]*")  # also safe as a file name
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")  # suite names: folder names too, never ..

DATASETS = (
    "mnist", "fashion-mnist", "cifar10", "synthetic", "synthetic-rgb", "folder", "npz", "celeba",
)  # fmt: skip
# CelebA at 64x64: a 148x148 centre crop of the 178x218 aligned faces, then a resize (README)
CELEBA_DEFAULTS = {"crop": 148, "image_size": 64}


class SuiteError(ValueError):
    """A problem with a suite file the user can fix; str() is the one line to print."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(Strict):
    name: Literal[DATASETS]
    root: str | None = Field(
        None, description="folder holding the dataset files (npz: the .npz file)"
    )
    crop: int | None = Field(None, gt=0, description="centre crop to N x N pixels first")
    image_size: int | None = Field(None, gt=0, description="then resize to N x N pixels")
    channels: Literal[1, 3] | None = Field(
        None, description="then convert to 1 (greyscale) or 3 channels; image files: 3 by default"
    )
    eval_fraction: float = Field(
        0.1, gt=0, lt=1, description="folder without train/ and test/: share held out for eval"
    )
    split_seed: int = Field(0, ge=0, description="seed of that held-out share")
    train_split: Literal["train", "test"] = "train"
    eval_split: Literal["train", "test"] = "test"
    train_limit: int | None = Field(
        None, gt=0, description="use a seeded class-stratified random subset of N training images"
    )
    eval_limit: int | None = Field(
        None, gt=0, description="use a seeded class-stratified random subset of N evaluation images"
    )
    subset_seed: int = Field(0, ge=0, description="seed of the train_limit / eval_limit subsets")

    @model_validator(mode="before")
    @classmethod
    def celeba_preprocessing(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("name") == "celeba":
            return CELEBA_DEFAULTS | data
        return data

    @property
    def preprocessing(self) -> Preprocessing:
        return Preprocessing(self.crop, self.image_size, self.channels)

    def load_options(self) -> dict[str, Any]:
        """The keyword arguments of bench.data.load_dataset this configuration fixes, beyond the
        name, root, splits and subsets."""
        return {
            "preprocessing": self.preprocessing,
            "eval_fraction": self.eval_fraction,
            "split_seed": self.split_seed,
        }

    @model_validator(mode="after")
    def held_out_evaluation(self) -> DatasetConfig:
        # FID against the training images rewards memorising them: evaluate on held-out data
        if self.eval_split == self.train_split:
            raise ValueError(
                f"eval_split is the training split ({self.train_split!r}); evaluate on held-out "
                "images: use train_split: train with eval_split: test"
            )
        return self


# dataset fields added after cells existed: at their defaults they are not part of a cell's id
IDENTITY_NEUTRAL_DEFAULTS = ("crop", "image_size", "channels", "eval_fraction", "split_seed")
OPTIMIZER_FIELDS = ("lr_g", "lr_d", "betas", "n_critic")


class BudgetConfig(Strict):
    """The budget every variant gets. `steps` / `epochs` count the unit `parity` names:

    generator_updates (default)  updates of the generator / decoder (and encoder): a WGAN-GP
                                 variant trains its critic n_critic times per step, on n_critic
                                 batches, so its generator gets as many updates as a BCE one
    batches                      batches of data: every variant sees the same images, and a
                                 WGAN-GP generator gets 1/n_critic of the updates

    `epochs: E` is E * (training images // batch_size) steps of that unit.
    lr_g, lr_d, betas and n_critic are the defaults of every variant; a model entry may override
    them (`optimizer:`), and the resolved values are part of each cell.
    """

    epochs: float | None = Field(None, gt=0)
    steps: int | None = Field(None, gt=0)
    parity: Literal["generator_updates", "batches"] = Field(
        "generator_updates", description="what steps/epochs count: generator updates or batches"
    )
    batch_size: int = Field(64, gt=0)
    latent_dim: int = Field(64, gt=0)
    width: int = Field(64, gt=0, description="channels of the first conv layer of every network")
    lr_g: float = Field(2e-4, gt=0, description="Adam learning rate of encoder/decoder/generator")
    lr_d: float = Field(2e-4, gt=0, description="Adam learning rate of the discriminator")
    betas: tuple[float, float] = (0.5, 0.999)
    n_critic: int = Field(5, ge=1, description="critic steps per generator step (WGAN-GP only)")
    log_every: int = Field(50, gt=0, description="log mean losses every N steps")
    checkpoint_every: int = Field(
        500, gt=0, description="save a resumable checkpoint every N steps (not part of the cell id)"
    )

    @model_validator(mode="after")
    def one_budget(self) -> BudgetConfig:
        if (self.epochs is None) == (self.steps is None):
            raise ValueError("give exactly one of 'epochs' or 'steps'")
        return self

    @field_validator("betas")
    @classmethod
    def betas_in_range(cls, betas: tuple[float, float]) -> tuple[float, float]:
        if not all(0 <= b < 1 for b in betas):
            raise ValueError("Adam betas must be in [0, 1)")
        return betas


class OptimizerConfig(Strict):
    """A model entry's overrides of the budget's optimizer settings (unset: the budget's)."""

    lr_g: float | None = Field(None, gt=0)
    lr_d: float | None = Field(None, gt=0)
    betas: tuple[float, float] | None = None
    n_critic: int | None = Field(None, ge=1)

    @field_validator("betas")
    @classmethod
    def betas_in_range(cls, betas: tuple[float, float] | None) -> tuple[float, float] | None:
        if betas is not None and not all(0 <= b < 1 for b in betas):
            raise ValueError("Adam betas must be in [0, 1)")
        return betas


class ComputeConfig(Strict):
    """How the training steps run. Part of a cell's id unless at the defaults (fp32, eager), so
    cells run before these switches existed keep their ids."""

    precision: Literal["fp32", "bf16"] = Field(
        "fp32", description="bf16: train steps under bfloat16 autocast (weights stay float32)"
    )
    compile: bool = Field(False, description="torch.compile the networks for training")


class EvaluationConfig(Strict):
    num_samples: int = Field(10000, gt=0, description="generated images per metric")
    batch_size: int = Field(500, gt=0)
    feature_extractors: list[Literal["domain", "inception"]] = ["domain", "inception"]
    inception_weights: str | None = Field(None, description="path to Inception weights for FID")
    every_epochs: int | None = Field(None, gt=0, description="cheap metrics every K epochs")
    grid_size: int = Field(64, gt=0, description="images in the logged sample grid")
    interp_pairs: int = Field(16, gt=0, description="latent pairs per interpolation metric")
    interp_steps: int = Field(16, gt=0, description="T: steps per interpolation path")
    interp_strips: int = Field(6, ge=0, description="paths per kind drawn in interpolation.png")
    batch_norm: Literal["recalibrate", "running"] = Field(
        "recalibrate",
        description="decoder batch-norm statistics when evaluating: re-estimated on the latents "
        "about to be decoded, or the running averages training left",
    )
    calibration_samples: int = Field(
        4096, gt=0, description="latents (prior draws, encoded training images) per recalibration"
    )


class SpaceEntry(Strict):
    """One searched name's distribution: exactly one of the four forms."""

    loguniform: tuple[float, float] | None = None
    uniform: tuple[float, float] | None = None
    int: tuple[int, int] | None = None  # noqa: A003 - the suite's spelling
    choice: list[Any] | None = None

    @model_validator(mode="after")
    def one_form(self) -> SpaceEntry:
        given = [name for name in ("loguniform", "uniform", "int", "choice") if getattr(self, name)]
        if len(given) != 1:
            raise ValueError("give exactly one of loguniform, uniform, int or choice")
        bounds = self.loguniform or self.uniform or self.int
        if bounds is not None and not bounds[0] < bounds[1]:
            raise ValueError(f"{given[0]} needs [low, high] with low < high")
        if self.loguniform is not None and self.loguniform[0] <= 0:
            raise ValueError("loguniform needs a positive low bound")
        return self


class SearchConfig(Strict):
    """An equal random-search budget per variant (Lucic et al. 2018): `trials` settings drawn
    from `space` (the same draws for every variant), each trained once, the best by `select`
    trained again with fresh seeds at the suite's budget."""

    trials: int = Field(
        ..., ge=1, le=1000, description="settings tried per variant, the same for all"
    )
    budget: dict[str, Any] = Field(
        {}, description="budget fields overridden for the trials (default: the suite's budget)"
    )
    seed: int = Field(0, ge=0, description="seed of the sampler: the same seed, the same trials")
    select: str = Field("fid_domain", description="metric the best trial is chosen by")
    seeds_of_best: int | None = Field(
        None, ge=1, description="seeds 0..N-1 of each variant's best setting (default: seeds)"
    )
    trial_seed: int = Field(
        1000, ge=0, description="trial n trains with seed trial_seed + n (never a follow-up seed)"
    )
    space: dict[str, SpaceEntry] = Field(..., min_length=1)


class VariantConfig(Strict):
    label: str = Field(..., min_length=1)
    model: str
    options: dict[str, Any] = {}
    optimizer: OptimizerConfig = OptimizerConfig()
    grid: dict[str, list[Any]] = Field(
        {}, description="option (or lr_g, lr_d, betas, n_critic) -> values, expanded as a product"
    )

    @field_validator("label")
    @classmethod
    def safe_label(cls, label: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.{}=+-]+", label) or label.startswith("."):
            raise ValueError("labels may hold only letters, digits and _ . - + = {placeholders}")
        return label


class Suite(Strict):
    name: str
    description: str = ""
    dataset: DatasetConfig
    budget: BudgetConfig
    seeds: list[Annotated[int, Field(ge=0, lt=2**32)]] = Field(..., min_length=1)
    evaluation: EvaluationConfig = EvaluationConfig()
    compute: ComputeConfig = ComputeConfig()
    models: list[VariantConfig] = Field(..., min_length=1)
    search: SearchConfig | None = None

    @field_validator("name")
    @classmethod
    def safe_name(cls, name: str) -> str:
        if not SAFE_NAME.fullmatch(name):
            raise ValueError("a suite name may hold only letters, digits and _ . - (no leading .)")
        return name

    @field_validator("seeds")
    @classmethod
    def unique_seeds(cls, seeds: list[int]) -> list[int]:
        if len(set(seeds)) != len(seeds):
            raise ValueError("seeds must be distinct")
        return seeds


@dataclass(frozen=True)
class Variant:
    label: str
    model: str
    options: dict[str, Any]  # fully resolved: every option with its value or default
    # resolved optimizer settings: lr_g, betas, n_critic (1 where the loss has no critic steps)
    # and lr_d (only for variants with a discriminator)
    optimizer: dict[str, Any]


@dataclass(frozen=True)
class Cell:
    suite: str
    dataset: DatasetConfig
    budget: BudgetConfig
    evaluation: EvaluationConfig
    variant: Variant
    seed: int
    compute: ComputeConfig = ComputeConfig()
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
        if self.compute != ComputeConfig():
            compute["compute"] = self.compute.model_dump()
        # how often it logs and checkpoints does not change what a cell computes; the optimizer
        # settings are the variant's own (resolved), not the budget's defaults
        budget = self.budget.model_dump(
            exclude={"log_every", "checkpoint_every", *OPTIMIZER_FIELDS}
        )
        return {
            "dataset": dataset,
            "budget": budget,
            "optimizer": self.variant.optimizer,
            "evaluation": self.evaluation.model_dump(),
            "model": self.variant.model,
            "options": self.variant.options,
            "seed": self.seed,
            "code_version": CODE_VERSION,
        } | compute

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


def load_suite(path: str | Path, overrides: tuple[str, ...] | list[str] = ()) -> Suite:
    """Read and validate a suite file, raising SuiteError with the file and field on any problem.
    `overrides` are `--set FIELD=VALUE` strings (a dotted field, a YAML value), applied to the
    file's data before validation: they are checked like the file and enter every cell's id."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as err:
        raise SuiteError(f"{path}: cannot read suite file ({err.strerror})") from None
    except UnicodeDecodeError:
        raise SuiteError(f"{path}: not a text file (a suite is UTF-8 YAML)") from None
    try:
        raw = yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: plain data, never objects
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SuiteError(f"{path}:{where}: malformed YAML: {problem}") from None
    if not isinstance(raw, dict):
        raise SuiteError(f"{path}: a suite must be a YAML mapping with name, dataset, budget, ...")
    for override in overrides:
        apply_override(raw, override)
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as err:
        given = f" (with --set {' --set '.join(overrides)})" if overrides else ""
        raise SuiteError(f"{path}{given}: {_describe(err)}") from None
    try:
        variants(suite)
        if suite.search is not None:
            check_search(suite)
        shape = declared_image_shape(suite.dataset)
        if shape is not None:
            check_image_shape(suite, shape)
    except SuiteError as err:
        raise SuiteError(f"{path}: {err}") from None
    return suite


BUILTIN_SHAPES = {
    "mnist": (1, 28, 28),
    "fashion-mnist": (1, 28, 28),
    "synthetic": (1, 28, 28),
    "cifar10": (3, 32, 32),
    "synthetic-rgb": (3, 32, 32),
}


def declared_image_shape(dataset: DatasetConfig) -> tuple[int, int, int] | None:
    """The images' shape when the suite alone fixes it (a known dataset, or a declared size and
    channels); None when only the files can tell (a folder or an .npz without image_size)."""
    base = BUILTIN_SHAPES.get(dataset.name)
    size = dataset.image_size or dataset.crop or (base[1] if base else None)
    channels = dataset.channels or (base[0] if base else None)
    if channels is None and dataset.name in ("folder", "celeba"):
        channels = 3  # image files are read as RGB unless told otherwise
    if size is None or channels is None:
        return None
    return (channels, size, size)


def check_image_shape(suite: Suite, shape: tuple[int, int, int]) -> None:
    """Every variant's options work on images of this shape (the networks' sizes, a VAE-GAN's
    dis_layer within the discriminator's depth), else SuiteError naming the variant."""
    for variant in variants(suite):
        cls = models.model_class(variant.model)
        options = models.validate_options(variant.model, variant.options)
        try:
            cls.validate_image_shape(options, shape)
        except models.ModelConfigError as err:
            raise SuiteError(f"models, {variant.label}: {err}") from None


def apply_override(raw: dict, override: str) -> None:
    """Set one `--set FIELD=VALUE` in the suite's data: FIELD is dotted (budget.steps,
    search.space.lr_g, models.1.options.loss: a number picks a list item), VALUE is YAML
    ([0, 1, 2], {steps: 500}, bf16). Unknown fields are left to the schema, which names them."""
    field, equals, text = override.partition("=")
    if not equals or not field.strip():
        raise SuiteError(f"--set {override!r}: expected FIELD=VALUE, e.g. --set budget.steps=5000")
    try:
        value = yaml.load(text, Loader=UniqueKeyLoader)
    except yaml.YAMLError as err:
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        raise SuiteError(f"--set {override!r}: the value is not YAML: {problem}") from None
    parts = field.strip().split(".")
    node = raw
    for depth, part in enumerate(parts):
        where = ".".join(parts[: depth + 1])
        last = depth == len(parts) - 1
        if isinstance(node, list):
            if not part.isdigit() or int(part) >= len(node):
                raise SuiteError(
                    f"--set {override!r}: {where}: a list of {len(node)} items takes an index "
                    f"0..{len(node) - 1}"
                )
            part = int(part)
        elif not isinstance(node, dict):
            raise SuiteError(
                f"--set {override!r}: {'.'.join(parts[:depth])} is a value, not a section"
            )
        if last:
            node[part] = value
        else:
            if isinstance(node, dict) and node.get(part) is None:
                node[part] = {}
            node = node[part]


class UniqueKeyLoader(yaml.SafeLoader):
    """yaml.SafeLoader that rejects a key given twice in one mapping: PyYAML would silently keep
    the last one, and a repeated key is as much a typo as a misspelt one."""


def _construct_unique_mapping(loader: UniqueKeyLoader, node: yaml.MappingNode) -> dict:
    seen = set()
    for key_node, _ in node.value:
        if isinstance(key_node, yaml.ScalarNode):
            if key_node.value in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key_node.value!r} is given twice", key_node.start_mark
                )
            seen.add(key_node.value)
    return loader.construct_mapping(node, deep=True)


UniqueKeyLoader.add_constructor(
    yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_unique_mapping
)


def _describe(err: ValidationError) -> str:
    first = err.errors()[0]
    field = ".".join(str(part) for part in first["loc"]) or "(top level)"
    if first["type"] == "extra_forbidden":
        section = SECTIONS.get(first["loc"][0], Suite) if len(first["loc"]) > 1 else Suite
        if first["loc"][:2] == ("search", "space") and len(first["loc"]) == 4:
            section = SpaceEntry
        allowed = list(section.model_fields)
        guess = difflib.get_close_matches(str(first["loc"][-1]), allowed, n=1)
        hint = f" (did you mean '{guess[0]}'?)" if guess else ""
        return f"unknown field '{field}'{hint}; allowed there: {', '.join(allowed)}"
    if first["type"] == "missing":
        return f"missing required field '{field}'"
    message = first["msg"].removeprefix("Value error, ")
    return f"field '{field}': {message} (got {first.get('input')!r})"


SECTIONS = {
    "dataset": DatasetConfig,
    "optimizer": OptimizerConfig,
    "budget": BudgetConfig,
    "evaluation": EvaluationConfig,
    "compute": ComputeConfig,
    "models": VariantConfig,
    "search": SearchConfig,
}


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
    return Variant(label, entry.model, options.model_dump(), optimizer)


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
        raise SuiteError(f"{where}: optimizer {_describe(err)}") from None
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
        raise SuiteError(f"search.budget: {_describe(err)}") from None


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


def trial_cells(suite: Suite) -> list[Cell]:
    """Stage 1 of a search: `trials` cells per variant, variants in file order. Trial n of every
    variant trains on draw n with seed trial_seed + n."""
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
    """Stage 2 of a search: the best trial's setting at the suite's budget, with fresh seeds."""
    return [
        Cell(
            suite.name,
            suite.dataset,
            suite.budget,
            suite.evaluation,
            best.variant,
            seed,
            suite.compute,
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
    selectable = keys.selection_metrics()
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
    space = search.select.rsplit("_", 1)[-1]
    if space in keys.FEATURE_SPACES and space not in suite.evaluation.feature_extractors:
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
