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

# Bump when a change to the training or evaluation code makes old results incomparable.
CODE_VERSION = "1"

SAFE_LABEL = re.compile(r"[A-Za-z0-9_=+-][A-Za-z0-9_.=+-]*")  # also safe as a file name
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")  # suite names: folder names too, never ..

DATASETS = ("mnist", "fashion-mnist", "cifar10", "synthetic", "synthetic-rgb")


class SuiteError(ValueError):
    """A problem with a suite file the user can fix; str() is the one line to print."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DatasetConfig(Strict):
    name: Literal["mnist", "fashion-mnist", "cifar10", "synthetic", "synthetic-rgb"]
    root: str | None = Field(None, description="folder holding the dataset files")
    train_split: Literal["train", "test"] = "train"
    eval_split: Literal["train", "test"] = "test"
    train_limit: int | None = Field(None, gt=0, description="use the first N training images")
    eval_limit: int | None = Field(None, gt=0, description="use the first N evaluation images")


class BudgetConfig(Strict):
    epochs: float | None = Field(None, gt=0)
    steps: int | None = Field(None, gt=0)
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

    def hparams(self) -> models.Hparams:
        return models.Hparams(
            latent_dim=self.latent_dim,
            width=self.width,
            lr_g=self.lr_g,
            lr_d=self.lr_d,
            betas=tuple(self.betas),
            n_critic=self.n_critic,
        )


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


class VariantConfig(Strict):
    label: str = Field(..., min_length=1)
    model: str
    options: dict[str, Any] = {}
    grid: dict[str, list[Any]] = Field({}, description="option -> values, expanded as a product")

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


@dataclass(frozen=True)
class Cell:
    suite: str
    dataset: DatasetConfig
    budget: BudgetConfig
    evaluation: EvaluationConfig
    variant: Variant
    seed: int
    compute: ComputeConfig = ComputeConfig()

    def config(self) -> dict[str, Any]:
        """The resolved configuration that defines this cell (and its id)."""
        dataset = self.dataset.model_dump(exclude={"root"})  # where the files live is not identity
        compute = {}
        if self.compute != ComputeConfig():
            compute["compute"] = self.compute.model_dump()
        return {
            "dataset": dataset,
            # how often it logs and checkpoints does not change what a cell computes
            "budget": self.budget.model_dump(exclude={"log_every", "checkpoint_every"}),
            "evaluation": self.evaluation.model_dump(),
            "model": self.variant.model,
            "options": self.variant.options,
            "seed": self.seed,
            "code_version": CODE_VERSION,
        } | compute

    @property
    def id(self) -> str:
        canonical = json.dumps(self.config(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:16]

    @property
    def name(self) -> str:
        return f"{self.variant.label}/seed{self.seed}"


def load_suite(path: str | Path) -> Suite:
    """Read and validate a suite file, raising SuiteError with the file and field on any problem."""
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
    try:
        suite = Suite.model_validate(raw)
    except ValidationError as err:
        raise SuiteError(f"{path}: {_describe(err)}") from None
    try:
        variants(suite)
    except SuiteError as err:
        raise SuiteError(f"{path}: {err}") from None
    return suite


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
    "budget": BudgetConfig,
    "evaluation": EvaluationConfig,
    "compute": ComputeConfig,
    "models": VariantConfig,
}


def variants(suite: Suite) -> list[Variant]:
    """Expand each model entry's grid into variants with resolved options and unique labels."""
    expanded: list[Variant] = []
    for index, entry in enumerate(suite.models):
        where = f"models[{index}] ({entry.label})"
        overlap = set(entry.grid) & set(entry.options)
        if overlap:
            raise SuiteError(f"{where}: option {sorted(overlap)[0]!r} is in both options and grid")
        for name, values in entry.grid.items():
            if not values:
                raise SuiteError(f"{where}: grid.{name} must list at least one value")
        keys = list(entry.grid)
        for combo in itertools.product(*(entry.grid[k] for k in keys)):
            chosen = dict(zip(keys, combo, strict=True))
            try:
                options = models.validate_options(entry.model, {**entry.options, **chosen})
            except models.ModelConfigError as err:
                allowed = ""
                if "unknown option" in str(err):
                    names = [row[0] for row in models.option_table(entry.model)]
                    allowed = f"; {entry.model} options: {', '.join(names)} (see `bench models`)"
                raise SuiteError(f"{where}: {err}{allowed}") from None
            label = _format_label(entry.label, chosen, where)
            expanded.append(Variant(label, entry.model, options.model_dump()))
    labels = [v.label for v in expanded]
    duplicates = sorted({label for label in labels if labels.count(label) > 1})
    if duplicates:
        raise SuiteError(
            f"duplicate variant label {duplicates[0]!r}: give each model entry a distinct label "
            "(use {option} placeholders for grids)"
        )
    return expanded


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
