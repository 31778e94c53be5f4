"""The Evaluator: what every cell of a suite shares to be scored (the evaluation split on the
device, the domain classifier, the Inception weights if any, and the real side of every metric,
computed once and cached), and `prepare`, which builds it once per suite.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import torch

from bench import keys
from bench.data.cache import default_cache_dir
from bench.data.config import DatasetConfig
from bench.data.datasets import load_dataset
from bench.data.images import DatasetNotFound, ImageData, Split, on_device, to_unit_range
from bench.data.preprocess import Preprocessing
from bench.metrics import domain, fidelity, inception_weights, memorisation, modes, ood
from bench.metrics.interpolation import real_scale
from bench.metrics.settings import OOD_SHIFTS, EvaluationConfig
from bench.metrics.sharpness import laplacian_energy


@dataclass
class Evaluator:
    data: ImageData
    config: EvaluationConfig
    device: torch.device
    eval_images: torch.Tensor  # uint8, on the device (converted per batch)
    classifier: torch.nn.Module
    classifier_path: Path
    classifier_accuracy: float
    inception_weights: Path | None
    inception_skip_reason: str | None
    cache_dir: Path
    ood_sets: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    # a search's dataset OOD sets, from those datasets' train splits (load_ood_sets)
    ood_validation_sets: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)
    inception_source: str | None = None  # where inception_weights came from, in words

    def inception_tags(self) -> dict[str, str]:
        """The runs' provenance of the Inception metrics: where the weights came from, or why
        there are none (no tag when the suite does not ask for Inception)."""
        if self.inception_source is not None:
            return {keys.TAG_INCEPTION_SOURCE: self.inception_source}
        if self.inception_skip_reason is not None:
            return {keys.TAG_INCEPTION_SKIPPED: self.inception_skip_reason}
        return {}

    @property
    def spaces(self) -> list[str]:
        spaces = [s for s in self.config.feature_extractors if s == "domain"]
        if "inception" in self.config.feature_extractors and self.inception_weights is not None:
            spaces.append("inception")
        return spaces

    def real_cache_name(self, space: str) -> str:
        """Identifies the real statistics: dataset, split, exact images, extractor."""
        extractor = self.classifier_path.stem if space == "domain" else "inception-v3-compat"
        tag = self.data.cache_tag
        return f"{tag}-{len(self.data.eval.images)}-{self.data.eval.digest}-{extractor}"

    @property
    def has_classes(self) -> bool:
        """Whether the domain network predicts classes (mode coverage needs them)."""
        return self.classifier.task == domain.CLASSES

    @torch.no_grad()
    def embed(self, images: torch.Tensor) -> torch.Tensor:
        """Domain-classifier features of model-range images, in batches."""
        batch = self.config.batch_size
        return torch.cat(
            [
                self.classifier.features(to_unit_range(images[i : i + batch].to(self.device)))
                for i in range(0, len(images), batch)
            ]
        )

    @cached_property
    def real_domain_logits(self) -> torch.Tensor:
        """The domain classifier's logits of the evaluation images: its head on the cached
        features (dropout is off in eval mode). Mode coverage compares the samples' predicted
        classes with these, the same labeller on both sides (the ground-truth labels would
        charge the classifier's own errors to every model)."""
        self.classifier.eval()
        with torch.no_grad():
            return self.classifier.head(self.real_domain_features.to(self.device)).cpu()

    @cached_property
    def modes_reference(self) -> modes.RealReference:
        """The evaluation images calibrated for mode coverage (bench/metrics/modes.py): the
        thresholds ~95% of them pass, and their own recognised classes."""
        return modes.real_reference(self.real_domain_logits, self.real_domain_features)

    @cached_property
    def real_sharpness(self) -> float:
        """Mean Laplacian energy of the evaluation images (bench/metrics/sharpness.py)."""
        return laplacian_energy(self.data.eval.images).mean().item()

    @cached_property
    def copying_reference(self) -> memorisation.CopyingReference:
        """The training split's domain features (extracted once, disk-cached like the evaluation
        split's), their k-means cells and the evaluation images' distances to them: C_T's real
        side (bench/metrics/memorisation.py)."""
        train = self.data.train
        name = f"{self.data.cache_tag}-train-{len(train.images)}-{train.digest}-"
        train_features = fidelity.real_domain_features(
            train.images,
            self.classifier,
            self.classifier_path,
            name + self.classifier_path.stem,
            self.config.batch_size,
            self.device,
            self.cache_dir,
        )
        return memorisation.copying_reference(self.real_domain_features, train_features)

    @cached_property
    def real_scale(self) -> float:
        """The median domain-feature distance between random pairs of evaluation images: the
        yardstick of interpolation reach (bench/metrics/interpolation.py)."""
        return real_scale(self.real_domain_features)

    @cached_property
    def real_domain_features(self) -> torch.Tensor:
        """Domain features of the evaluation images: read from the disk cache (extracted and
        written there the first time), then kept here for the suite's later cells."""
        return fidelity.real_domain_features(
            self.data.eval.images,
            self.classifier,
            self.classifier_path,
            self.real_cache_name("domain"),
            self.config.batch_size,
            self.device,
            self.cache_dir,
        )


def prepare(
    data: ImageData,
    dataset: DatasetConfig,
    config: EvaluationConfig,
    device: torch.device,
    cli_root: str | None = None,
    cache_dir: Path | None = None,
    log: Callable[[str], None] = print,
) -> Evaluator:
    """Train or load the domain classifier and find the Inception weights (when asked for:
    bench/metrics/inception_weights.py, which may convert them once), once per suite.

    The classifier is trained on the suite's whole training split (its train_split, without
    train_limit) less a search's validation images (domain.without: the trials are scored against
    them, so the classifier must not have learned them) and measured on its whole eval_split, so
    that it is the same for every suite on that dataset and those splits (and validation set);
    on unlabelled data it learns the rotation task (bench/metrics/domain.py)."""
    cache_dir = cache_dir or default_cache_dir()
    full = data
    limited = dataset.train_limit is not None or dataset.eval_limit is not None
    if limited or data.validation is not None:
        full = load_dataset(
            dataset.name,
            dataset.root,
            cli_root,
            dataset.train_split,
            dataset.eval_split,
            cache_dir=cache_dir,
            **dataset.load_options(),
        )
    if data.validation is not None:  # a new fingerprint, hence its own cached classifier
        train = domain.without(full.train, data.validation)
        full = dataclasses.replace(full, train=train, _fingerprint=None)
    classifier, accuracy = domain.load_or_train(
        full.cache_tag,
        full.fingerprint,
        full.train,
        full.eval,
        full.image_shape,
        full.num_classes,
        device,
        cache_dir=cache_dir,
        log=log,
    )
    classifier_path = domain.cache_path(
        full.cache_tag, full.fingerprint, cache_dir, domain.task_for(full.num_classes)
    )
    weights, skip_reason = None, None
    if "inception" in config.feature_extractors:
        weights = inception_weights.resolve(config.inception_weights, cache_dir=cache_dir, log=log)
        if weights is None:
            skip_reason = inception_weights.skip_reason()
            log(skip_reason)
    ood_sets, ood_validation_sets = load_ood_sets(config, data, cli_root, cache_dir)
    return Evaluator(
        data=data,
        config=config,
        device=device,
        eval_images=on_device(data.eval.images, device, "evaluation set"),
        classifier=classifier,
        classifier_path=classifier_path,
        classifier_accuracy=accuracy,
        inception_weights=weights.path if weights is not None else None,
        inception_skip_reason=skip_reason,
        cache_dir=cache_dir,
        ood_sets=ood_sets,
        ood_validation_sets=ood_validation_sets,
        inception_source=weights.source if weights is not None else None,
    )


def load_ood_sets(
    config: EvaluationConfig, data: ImageData, cli_root: str | None, cache_dir: Path
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """evaluation.ood's images (uint8, ood_images of each), read once per suite before any
    training: a shift of the evaluation images, or a dataset's test split brought to the suite's
    image shape. Second, for a suite with a search (a validation split), each dataset set drawn
    from that dataset's train split instead, so that scoring a trial reads no test split (the
    shifts of validation images are made in scoring_on). A dataset missing offline is a
    DatasetNotFound naming the field."""
    channels, size = data.image_shape[0], data.image_shape[1]
    sets, validation_sets = {}, {}
    searched = data.validation is not None
    for index, entry in enumerate(config.ood):
        if entry.name in OOD_SHIFTS:
            images = ood.shifted(ood.subset(data.eval.images, config.ood_images), entry.name)
        else:
            try:
                other = load_dataset(
                    entry.name, entry.root, cli_root, "train" if searched else "test", "test",
                    cache_dir=cache_dir, progress=False,
                    preprocessing=Preprocessing(image_size=size, channels=channels),
                )  # fmt: skip
            except DatasetNotFound as err:
                raise DatasetNotFound(f"evaluation.ood[{index}] ({entry.name}): {err}") from None
            images = ood.subset(other.eval.images, config.ood_images)
            if searched:
                validation_sets[entry.name] = ood.subset(other.train.images, config.ood_images)
        sets[entry.name] = images
    return sets, validation_sets


def scoring_on(evaluator: Evaluator, split: Split) -> Evaluator:
    """The same evaluator (classifier, settings, training pool) scoring against `split`
    instead of the evaluation split: a search's validation images. Its real features and scale
    are those of `split`, cached under its own digest, and so are its OOD shifts."""
    data = dataclasses.replace(evaluator.data, eval=split)
    images = on_device(split.images, evaluator.device, "validation set")
    sets = ood.validation_sets(
        evaluator.ood_sets, evaluator.ood_validation_sets, split.images, evaluator.config.ood_images
    )
    return dataclasses.replace(evaluator, data=data, eval_images=images, ood_sets=sets)
