"""The metric table: every metric, once, with its key, title, direction, group, whether it is
tested (a headline metric), its feature space, and whether a search may select by it.

The report (columns, tests, figures), the suite's check of `search.select` and the runner's choice
of a search's best trial (the direction) read it; adding a metric is a file in this package plus
one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import keys


@dataclass(frozen=True)
class Metric:
    key: str
    title: str  # names its feature space where it has one
    lower_is_better: bool | None  # None: a count of the budget, neither better nor worse
    group: str
    about: str = ""
    headline: bool = False  # tested for "is the difference real?"
    space: str | None = None  # the feature space it is measured in (keys.FEATURE_SPACES), if any
    selectable: bool = False  # a search may choose its best trial by it (search.select)

    @property
    def direction(self) -> str:
        if self.lower_is_better is None:
            return "budget, neither better nor worse"
        return "lower is better" if self.lower_is_better else "higher is better"

    @property
    def arrow(self) -> str:
        if self.lower_is_better is None:
            return ""
        return "↓" if self.lower_is_better else "↑"


QUALITY = "Sample quality"
LATENT = "Reconstruction, latent space and modes"
COST = "Cost"
SPACE_TITLES = {"domain": "domain classifier", "inception": "Inception"}
PAIR_TITLES = {"prior": "prior pairs", "encoded": "encoded pairs"}


def metric_specs() -> list[Metric]:
    """Every metric column of the report, in display order, with what it measures."""
    specs = []
    for space in keys.FEATURE_SPACES:
        name = SPACE_TITLES[space]
        specs += [
            Metric(
                keys.fid_key(space),
                f"FID ({name})",
                True,
                QUALITY,
                "Fréchet distance between generated and real evaluation images in the "
                f"{name} feature space",
                headline=True,
                space=space,
                selectable=True,
            ),
            Metric(
                keys.kid_key(space),
                f"KID ({name})",
                True,
                QUALITY,
                f"kernel inception distance in the {name} feature space, mean over subsets",
                space=space,
                selectable=True,
            ),
            Metric(
                keys.precision_key(space),
                f"Precision ({name})",
                False,
                QUALITY,
                "share of generated images inside the real images' manifold (k=3)",
                headline=True,
                space=space,
                selectable=True,
            ),
            Metric(
                keys.recall_key(space),
                f"Recall ({name})",
                False,
                QUALITY,
                "share of real images inside the generated images' manifold (k=3)",
                headline=True,
                space=space,
                selectable=True,
            ),
        ]
    specs.append(
        Metric(
            keys.RECON_MSE,
            "Reconstruction MSE",
            True,
            LATENT,
            "per-pixel squared error on the [0, 1] scale between evaluation images and "
            "decode(encode(x)); variants with an encoder only",
            headline=True,
            selectable=True,
        )
    )
    specs += interpolation_specs()
    specs += [
        Metric(
            keys.MODES_COVERED,
            "Modes covered",
            False,
            LATENT,
            "classes that receive at least half their real share among the samples",
            selectable=True,
        ),
        Metric(
            keys.CLASS_KL,
            "Class KL",
            True,
            LATENT,
            "KL(real class histogram || generated class histogram), classes by the domain "
            "classifier",
            selectable=True,
        ),
        Metric(
            keys.GENERATOR_UPDATES,
            "Generator updates",
            None,
            COST,
            "updates of the generator / decoder (and encoder) over training",
        ),
        Metric(
            keys.DISCRIMINATOR_UPDATES,
            "Discriminator updates",
            None,
            COST,
            "updates of the discriminator / critic over training (0 without one)",
        ),
        Metric(
            keys.IMAGES_SEEN,
            "Images seen",
            None,
            COST,
            "training images consumed (every training step call takes one batch)",
        ),
        Metric(
            keys.TRAIN_IMAGES_PER_S,
            "Images/s (training)",
            False,
            COST,
            "real training images consumed per second by the training loop",
        ),
        Metric(keys.TRAIN_SECONDS, "Training time (s)", True, COST, "wall time of training"),
        Metric(keys.EVAL_SECONDS, "Evaluation time (s)", True, COST, "wall time of evaluation"),
        Metric(
            keys.CELL_SECONDS,
            "Wall time per cell (s)",
            True,
            COST,
            "whole cell: training, evaluation and artifacts",
        ),
    ]
    return specs


def interpolation_specs() -> list[Metric]:
    """Energy, evenness and degenerate share of latent interpolations, per kind of pair."""
    specs = []
    for pairs in keys.INTERP_PAIRS:
        specs.append(
            Metric(
                keys.interp_energy_key(pairs),
                f"Interp. energy ({PAIR_TITLES[pairs]})",
                True,
                LATENT,
                "path energy relative to the endpoints' distance in domain features; "
                "1 = even straight path, ideal; lower is better",
            )
        )
    for pairs in keys.INTERP_PAIRS:
        specs.append(
            Metric(
                keys.interp_evenness_key(pairs),
                f"Interp. evenness ({PAIR_TITLES[pairs]})",
                True,
                LATENT,
                "largest step of an interpolation path over its length in domain features "
                "(1/T: even, the ideal; 1: one jump); lower is better",
            )
        )
    for pairs in keys.INTERP_PAIRS:
        specs.append(
            Metric(
                keys.interp_degenerate_key(pairs),
                f"Interp. degenerate ({PAIR_TITLES[pairs]})",
                True,
                LATENT,
                "share of interpolation pairs whose endpoint images coincide in domain features "
                "(1 for a constant generator, whose energy and evenness are then absent); "
                "lower is better",
            )
        )
    return specs


def selection_metrics() -> dict[str, bool]:
    """Metrics a search may select by, each with whether lower is better."""
    return {m.key: m.lower_is_better for m in metric_specs() if m.selectable}
