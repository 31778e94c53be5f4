"""Reading a suite file: YAML (duplicate keys refused), `--set` overrides applied before
validation, the checks that span sections (a search's names, a dataset's image shape), and the
one-line SuiteError for each problem.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import yaml
from pydantic import ValidationError

import models
from bench.data.config import DatasetConfig
from bench.metrics import table
from bench.suite import plugins, published
from bench.suite.expand import Cell, variants
from bench.suite.schema import (
    Suite,
    SuiteError,
    describe_error,
)
from bench.suite.search import check_search
from models.networks import SUPPORTED_SIZES


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
        raise SuiteError(f"{path}{given}: {describe_error(err)}") from None
    plugins.load_all(suite.plugins, path.parent, f"{path} (plugins)")
    try:
        variants(suite)
        if suite.search is not None:
            check_search(suite)
        check_claims(suite)
        check_published(suite)
        shape = declared_image_shape(suite.dataset)
        if shape is not None:
            check_image_shape(suite, shape)
    except SuiteError as err:
        raise SuiteError(f"{path}: {err}") from None
    check_plugin_models(suite, shape)
    return suite


def check_plugin_models(suite: Suite, shape: tuple[int, int, int] | None) -> None:
    """One training step of every plugin model the suite names, on a throwaway instance
    (plugins.check_model), at the suite's image shape; where only the files can tell it, at the
    first supported size the model accepts (the cells check the real one)."""
    for variant in variants(suite):
        if variant.plugin is None:
            continue
        cls = models.model_class(variant.model)
        options = cls.Options.model_validate(variant.options)
        channels = suite.dataset.channels or 3  # image files are read as RGB unless told
        for trial_shape in [shape] if shape else [(channels, s, s) for s in SUPPORTED_SIZES]:
            try:
                cls.validate_image_shape(options, trial_shape)
            except models.ModelConfigError:
                continue
            cell = Cell(suite.name, suite.dataset, suite.budget, suite.evaluation, variant, 0)
            plugins.check_model(variant.model, variant.options, trial_shape, cell.hparams())
            break


def check_claims(suite: Suite) -> None:
    """Every claim names a metric of the metric table that has a direction, and variants of this
    suite, none on both sides."""
    directed = {m.key: m for m in table.metric_specs() if m.lower_is_better is not None}
    labels = [v.label for v in variants(suite)]
    for index, claim in enumerate(suite.claims):
        where = f"claims[{index}] ({claim.name})"
        if claim.metric not in directed:
            guess = difflib.get_close_matches(claim.metric, sorted(directed), n=1)
            hint = f" (did you mean '{guess[0]}'?)" if guess else ""
            raise SuiteError(
                f"{where}: metric {claim.metric!r} is not a metric with a direction{hint}; "
                "the metric table is bench/metrics/table.py"
            )
        for side in ("better", "worse"):
            for label in getattr(claim, side):
                if label not in labels:
                    guess = difflib.get_close_matches(label, labels, n=1)
                    hint = f" (did you mean '{guess[0]}'?)" if guess else ""
                    raise SuiteError(
                        f"{where}: {side} names {label!r}, not a variant of this suite{hint}; "
                        f"variants: {', '.join(labels)}"
                    )
        target = directed[claim.metric].target
        if claim.direction == "closer_to_target" and target is None:
            raise SuiteError(
                f"{where}: direction closer_to_target needs a metric with a target; "
                f"{claim.metric} has none (use lower or higher)"
            )
        both = sorted(set(claim.better) & set(claim.worse))
        if both:
            raise SuiteError(f"{where}: {both[0]!r} is on both sides (better and worse)")


def check_published(suite: Suite) -> None:
    """Every `published:` block names a metric of the metric table and variants of this suite."""
    labels = [v.label for v in variants(suite)]
    try:
        published.check_published(suite.published, labels, [m.key for m in table.metric_specs()])
    except ValueError as err:
        raise SuiteError(str(err)) from None


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
