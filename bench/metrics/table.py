"""The metric table: every metric, once, with its key, title, direction, group, whether it is
tested (a headline metric), its feature space, and whether a search may select by it.

The report (columns, tests, figures), the suite's check of `search.select` and the runner's choice
of a search's best trial (the direction) read it; adding a metric is a file in this package plus
one entry here.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench import keys
from bench.metrics.settings import OOD_SETS


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
    # the ideal value where it is neither the lowest nor the highest: then closer is better
    # (lower_is_better is True and applies to the distance |value - target|, `score`)
    target: float | None = None
    # what the direction says where lower_is_better is None
    undirected: str = "budget, neither better nor worse"

    @property
    def direction(self) -> str:
        if self.target is not None:
            return f"closest to {self.target:g} is best"
        if self.lower_is_better is None:
            return self.undirected
        return "lower is better" if self.lower_is_better else "higher is better"

    @property
    def arrow(self) -> str:
        if self.target is not None:
            return f"→{self.target:g}"
        if self.lower_is_better is None:
            return ""
        return "↓" if self.lower_is_better else "↑"

    def score(self, value: float) -> float:
        """What the direction applies to: the value, or its distance to the target."""
        return abs(value - self.target) if self.target is not None else value


QUALITY = "Sample quality"
LATENT = "Reconstruction, latent space and modes"
COST = "Cost"
OOD = "Out-of-distribution detection"
OOD_SCORE_TITLES = {"elbo": "−ELBO", "recon": "recon. error", "disc": "−discriminator"}
SPACE_TITLES = {"domain": "domain classifier", "inception": "Inception"}
PAIR_TITLES = {"prior": "prior pairs", "encoded": "encoded pairs"}
SELECTION_RULE = (
    "a search selects, and the report tests, only metrics a degenerate generator cannot win: "
    "FID, KID, coverage and reconstruction MSE"
)


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
                headline=True,
                space=space,
                selectable=True,
            ),
            Metric(
                keys.coverage_key(space),
                f"Coverage ({name})",
                False,
                QUALITY,
                "share of real images whose k-NN ball (k=5) holds a generated image (Naeem et "
                "al. 2020); a constant image or wide noise scores low",
                headline=True,
                space=space,
                selectable=True,
            ),
            Metric(
                keys.precision_key(space),
                f"Precision ({name})",
                False,
                QUALITY,
                "share of generated images inside the real images' manifold (k=3); descriptive: "
                "a constant image scores 1",
                space=space,
            ),
            Metric(
                keys.recall_key(space),
                f"Recall ({name})",
                False,
                QUALITY,
                "share of real images inside the generated images' manifold (k=3); descriptive: "
                "wide noise scores 1",
                space=space,
            ),
            Metric(
                keys.density_key(space),
                f"Density ({name})",
                False,
                QUALITY,
                "real k-NN balls (k=5) holding each generated image, over k (about 1 for a "
                "generator like the data; unbounded above); descriptive",
                space=space,
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
    specs += [
        Metric(
            keys.SHARPNESS_SAMPLES,
            "Sharpness (samples)",
            True,
            QUALITY,
            "Laplacian energy of the samples over that of the real evaluation images: below 1 "
            "blurrier than the data, above 1 more high-frequency energy (noise) than the data",
            target=1.0,
        ),
        Metric(
            keys.DATA_COPYING,
            "Data copying C_T (domain classifier)",
            True,
            QUALITY,
            "Meehan et al. 2020: Mann-Whitney z of the samples' distance to the training set "
            "against held-out images', per k-means cell; below 0 copying, above 0 underfitting. "
            "A z-score grows with √(samples): compare values at the same evaluation.num_samples "
            "only",
            space="domain",
            target=0.0,
        ),
        Metric(
            keys.SHARPNESS_RECON,
            "Sharpness (reconstructions)",
            True,
            LATENT,
            "Laplacian energy of the reconstructions over that of their inputs; variants with an "
            "encoder only",
            target=1.0,
        ),
    ]
    specs += interpolation_specs()
    specs += [
        Metric(
            keys.probe_key(features, random),
            f"Probe accuracy ({'random ' if random else ''}{features})",
            # the baseline is a yardstick for the trained probe, not a score to rank by
            None if random else False,
            LATENT,
            f"test accuracy of a logistic-regression probe on the {what}"
            + (" of the same architecture with random weights (the baseline)" if random else ""),
            undirected="a baseline, no direction",
        )
        for features, what in (
            ("encoder", "encoder means"),
            ("discriminator", "discriminator's penultimate features"),
        )
        for random in (False, True)
    ]
    specs += ood_specs()
    specs += [
        Metric(
            keys.MODES_COVERED,
            "Modes covered",
            False,
            LATENT,
            "classes that receive at least half their real share among the samples, counting "
            "only confident predictions (probability at least the threshold ~95% of real "
            "images pass)",
        ),
        Metric(
            keys.CLASS_KL,
            "Class KL",
            True,
            LATENT,
            "KL(real || generated) over the domain classifier's confident classes and an "
            "unrecognised bin",
        ),
        Metric(
            keys.UNRECOGNISED,
            "Unrecognised",
            True,
            LATENT,
            "share of samples the domain classifier assigns to no class with the confidence "
            "~95% of real images reach (real images: about 0.05)",
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


def ood_specs() -> list[Metric]:
    """AUROC of each anomaly score against each out-of-distribution set (evaluation.ood)."""
    return [
        Metric(
            keys.ood_key(score, ood_set),
            f"OOD AUROC ({OOD_SCORE_TITLES[score]}, {ood_set})",
            False,
            OOD,
            f"AUROC of the {OOD_SCORE_TITLES[score]} score separating {ood_set} images from the "
            "evaluation images: 1 perfect, 0.5 chance, below 0.5 the model prefers the outliers"
            + (
                "; with a fixed pixel σ (0.2) the −ELBO is dominated by the reconstruction "
                "error, and its AUROC equals the recon. error's to about three digits"
                if score == "elbo"
                else ""
            ),
        )
        for score in keys.OOD_SCORES
        for ood_set in OOD_SETS
    ]


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
                keys.interp_reach_key(pairs),
                f"Interp. reach ({PAIR_TITLES[pairs]})",
                True,
                LATENT,
                "mean distance between a pair's endpoint images over the real scale (the median "
                "distance between random real evaluation images), in domain features; about 1 "
                "for a generator as diverse as the data (wide noise scores highest)",
                target=1.0,
            )
        )
    for pairs in keys.INTERP_PAIRS:
        specs.append(
            Metric(
                keys.interp_degenerate_key(pairs),
                f"Interp. degenerate ({PAIR_TITLES[pairs]})",
                True,
                LATENT,
                "share of interpolation pairs whose endpoint images lie closer than 10% of the "
                "real scale in domain features (1 for a constant or near-constant generator, "
                "whose energy and evenness are then absent); lower is better",
            )
        )
    return specs


def selection_metrics() -> dict[str, bool]:
    """Metrics a search may select by, each with whether lower is better.

    The rule (SELECTION_RULE): only metrics that a degenerate generator cannot win. FID and KID
    compare whole distributions; coverage counts real neighbourhoods reached; reconstruction
    error needs every image back. Precision (a constant image: 1), recall (wide noise: 1),
    density (unbounded for packed samples), modes and the interpolation numbers can each be won
    by a generator no one would choose, so they stay descriptive."""
    return {m.key: m.lower_is_better for m in metric_specs() if m.selectable}
