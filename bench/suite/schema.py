"""The suite file's schema: pydantic models of every section, strict (an unknown field is an
error), and the wording of a validation error as one line naming the field.

The dataset and evaluation sections are the data and metrics stages' own settings
(bench/data/config.py, bench/metrics/settings.py); this module assembles them into a Suite.
Every error a user can cause ends as a SuiteError: one line naming the file and field.
"""

from __future__ import annotations

import difflib
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from bench.data.config import DatasetConfig
from bench.metrics.settings import EvaluationConfig
from bench.suite.published import PublishedConfig

SAFE_LABEL = re.compile(r"[A-Za-z0-9_=+-][A-Za-z0-9_.=+-]*")  # also safe as a file name
SAFE_NAME = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9_.-]*")  # suite names: folder names too, never ..


class SuiteError(ValueError):
    """A problem with a suite file the user can fix; str() is the one line to print."""


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


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
    channels_last: bool | Literal["auto"] = Field(
        "auto",
        description="networks and training batches in channels_last (NHWC) memory format: "
        "the fast convolution path of oneDNN CPUs and of GPU tensor cores; auto: on for CPUs "
        "(faster on every CPU kind measured, equal losses within 1e-3), off on CUDA",
    )

    @field_validator("channels_last", mode="before")
    @classmethod
    def true_false_or_auto(cls, value: Any) -> Any:
        if isinstance(value, bool) or value == "auto":
            return value
        raise ValueError("expected true, false or auto")


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
    trained again with fresh seeds at the suite's budget. The choice is made on validation images
    held out of the training split, never on the evaluation split the report shows."""

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
    validation: int | None = Field(
        None,
        ge=10,
        description="training images held out (seeded by dataset.subset_seed, class-stratified) "
        "to select on; the trials and the follow-up seeds train on the rest (default: 10% of "
        "the training split or 5000, whichever is smaller)",
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


class ClaimConfig(Strict):
    """A hypothesis declared before the suite runs: the `better` variants beat the `worse` ones on
    `metric` (in its direction). The report tests it (bench/report/claims.py)."""

    name: str = Field(..., min_length=1, description="the claim in words")
    metric: str = Field(..., description="a metric key of the metric table (bench metrics)")
    better: list[str] = Field(..., min_length=1, description="variant labels claimed better")
    worse: list[str] = Field(..., min_length=1, description="variant labels claimed worse")
    source: str = Field(..., min_length=1, description="who makes the claim (a citation)")
    # the metric's table direction can say something else than the claim's words: sharpness is
    # "closest to 1" in the table, while "blurrier" claims the raw value is lower
    direction: Literal["lower", "higher", "closer_to_target"] | None = Field(
        None,
        description="what 'better' means for this claim: lower, higher, or closer_to_target "
        "(the metric's target); default: the metric table's direction",
    )


class Suite(Strict):
    name: str
    description: str = ""
    plugins: list[str] = Field(
        [],
        description="your own models: .py files (relative to the suite file) or importable "
        "module names, imported before the models are resolved (bench/suite/plugins.py)",
    )
    dataset: DatasetConfig
    budget: BudgetConfig
    seeds: list[Annotated[int, Field(ge=0, lt=2**32)]] = Field(..., min_length=1)
    evaluation: EvaluationConfig = EvaluationConfig()
    compute: ComputeConfig = ComputeConfig()
    models: list[VariantConfig] = Field(..., min_length=1)
    search: SearchConfig | None = None
    claims: list[ClaimConfig] = Field(
        [], description="hypotheses declared before running, tested in the report's Claims"
    )
    published: list[PublishedConfig] = Field(
        [], description="a paper's values for the variants, beside ours in Published results"
    )

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


def describe_error(err: ValidationError) -> str:
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
    "claims": ClaimConfig,
    "published": PublishedConfig,
}
