"""Where a report's numbers come from, read from the runs' tags and params: data, preprocessing,
splits, budget, evaluation, feature spaces, versions and commits, each variant's options and
optimizer settings, and the suite file the runs logged.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import pandas as pd
from mlflow.entities import Run
from mlflow.tracking import MlflowClient

from bench import keys
from bench.report.artifacts import download

NOT_RECORDED = "not recorded"
BUDGET_SIZES = ("batch_size", "latent_dim", "width")  # budget.* params besides steps / epochs
OPTIMIZER_PARAMS = ("lr_g", "lr_d", "betas", "n_critic")  # optimizer.* params, per variant
PARITY = {
    "generator_updates": "counted as generator updates (every variant gets the same number of "
    "generator/decoder updates; WGAN-GP critics take n_critic updates per step)",
    "batches": "counted as batches of data (every variant sees the same images; a WGAN-GP "
    "generator gets 1/n_critic of the updates)",
}


def provenance(runs: list[Run], cells: pd.DataFrame) -> list[tuple[str, str]]:
    """(what, value) rows read from the runs: what a reader needs to reproduce or trust them."""

    def tag(key: str) -> str:
        return _distinct([run.data.tags.get(key) for run in runs])

    def param(key: str) -> str:
        return _distinct([run.data.params.get(key) for run in runs])

    def dataset_split(split: str, limit: str) -> str:
        count = param(f"dataset.{limit}")
        if count in ("None", NOT_RECORDED):
            return param(f"dataset.{split}")
        seed = param("dataset.subset_seed")
        return (
            f"{param(f'dataset.{split}')} (seeded class-stratified subset of {count} images, "
            f"seed {seed})"
        )

    versions = sorted(
        {
            key.removeprefix(keys.TAG_VERSION_PREFIX)
            for run in runs
            for key in run.data.tags
            if key.startswith(keys.TAG_VERSION_PREFIX)
        }
    )
    version_text = (
        ", ".join(f"{name} {tag(keys.TAG_VERSION_PREFIX + name)}" for name in versions)
        or NOT_RECORDED
    )
    seeds = sorted(set(cells["seed"]))
    # recorded by runs since datasets took preprocessing and image folders (older runs lack them)
    data_rows = [
        (what, tag(key))
        for what, key in (
            ("Data source", keys.TAG_DATA_SOURCE),
            ("Preprocessing", keys.TAG_DATA_PREPROCESSING),
            ("Splits", keys.TAG_DATA_SPLIT_RULE),
        )
        if _given(tag(key))
    ]
    return [
        ("Dataset", param("dataset.name")),
        *data_rows,
        ("Training split", dataset_split("train_split", "train_limit")),
        ("Evaluation split", dataset_split("eval_split", "eval_limit")),
        *validation_rows(param),
        ("Budget", budget_text(param)),
        ("Evaluation", evaluation_text(param)),
        ("Seeds", ", ".join(str(s) for s in seeds)),
        ("Feature spaces", feature_spaces(runs)),
        *copying_rows(runs),
        ("Code version", f"git {tag(keys.TAG_GIT_COMMIT)}; harness {param('code_version')}"),
        *plugin_rows(runs),
        ("Evaluation version", tag(keys.TAG_EVALUATION_VERSION)),
        ("Libraries", version_text),
        ("Device", tag(keys.TAG_DEVICE)),
    ]


def copying_rows(runs: list[Run]) -> list[tuple[str, str]]:
    """What C_T was computed from: a z-score grows with the square root of the samples, so a
    value is read only beside others at the same count (none when no run has C_T)."""
    runs = [run for run in runs if keys.DATA_COPYING in run.data.metrics]
    if not runs:
        return []
    params = {
        name: _distinct([run.data.params.get(name) for run in runs])
        for name in ("evaluation.num_samples", "dataset.eval_split", "dataset.train_split")
    }
    return [
        (
            "Data copying C_T",
            f"{params['evaluation.num_samples']} samples against the "
            f"{params['dataset.eval_split']} split's images, both by their distance to the "
            f"{params['dataset.train_split']} split in the domain classifier's features (Meehan "
            "et al. 2020); a z-score, which grows with the square root of the sample count: "
            "compare C_T only between reports at the same count",
        )
    ]


def plugin_rows(runs: list[Run]) -> list[tuple[str, str]]:
    """The plugins the models came from, with the content hash in their cells' ids (the plugin.*
    params; the source is each run's plugins/ artifact); none when every model is built in."""
    found = sorted(
        {
            (
                run.data.tags.get(keys.TAG_MODEL, "?"),
                run.data.params.get("plugin.file") or run.data.params["plugin.module"],
                run.data.params["plugin.sha256"],
            )
            for run in runs
            if "plugin.sha256" in run.data.params
        }
    )
    if not found:
        return []
    text = "; ".join(f"model {model}: {name}, sha256 {sha}" for model, name, sha in found)
    return [("Plugins", f"{text} (each run logged the source, {keys.ARTIFACT_PLUGINS}/)")]


def validation_rows(param) -> list[tuple[str, str]]:
    """A search's hold-out, from the validation.* params of its cells (none without a search)."""
    size = param("validation.size")
    if not _given(size):
        return []
    size = "10% of the training split, at most 5000" if size == "auto" else f"{size} images"
    return [
        (
            "Search validation",
            f"{size} held out of the training split (seed {param('validation.seed')}, "
            "class-stratified): the trials trained without them and were scored on them; the "
            "cells in the tables trained without them too and are scored on the evaluation split",
        )
    ]


def budget_text(param) -> str:
    """'1500 steps, counted as generator updates (...); batch_size 64, ...' from the budget.*
    params (param: name -> the runs' value, NOT_RECORDED, or "mixed: ...")."""
    steps, epochs = param("budget.steps"), param("budget.epochs")
    length = [f"{_whole(value)} {unit}" for value, unit in ((steps, "steps"), (epochs, "epochs"))]
    length = [text for text, value in zip(length, (steps, epochs), strict=True) if _given(value)]
    parity = param("budget.parity")
    counted = (
        PARITY.get(parity, f"counted as {parity}")
        if _given(parity)
        else ("unit not recorded (generator updates or batches)")
    )
    sizes = ", ".join(
        f"{name} {param('budget.' + name)}"
        for name in BUDGET_SIZES
        if _given(param("budget." + name))
    )
    head = ", ".join([*length, counted]) if length else NOT_RECORDED
    return f"{head}; {sizes}" if sizes else head


def evaluation_text(param) -> str:
    """Sample count and how the decoder's batch norm was set for evaluation."""
    samples = param("evaluation.num_samples")
    if not _given(samples):
        return NOT_RECORDED
    text = f"{samples} generated images per metric"
    policy = param("evaluation.batch_norm")
    if policy == "recalibrate":
        latents = param("evaluation.calibration_samples")
        text += f"; decoder batch-norm statistics re-estimated on {latents} latents first"
    elif _given(policy):
        text += f"; decoder batch norm: {policy}"
    return text


def _whole(text: str) -> str:
    """'2.0' -> '2' (epochs are logged as floats); anything else unchanged."""
    try:
        number = float(text)
    except ValueError:
        return text
    return str(int(number)) if number.is_integer() else text


def _given(value: str) -> bool:
    return value not in ("None", NOT_RECORDED)


def feature_spaces(runs: list[Run]) -> str:
    """Which feature space each FID/KID/precision/recall number used, and why one is absent."""
    parts = []
    accuracies = [run.data.metrics.get(keys.DOMAIN_ACCURACY) for run in runs]
    accuracies = sorted({round(a, 4) for a in accuracies if a is not None})
    if any(keys.fid_key("domain") in run.data.metrics for run in runs):
        accuracy = ", ".join(f"{a:.4f}" for a in accuracies) or NOT_RECORDED
        if any(run.data.tags.get(keys.TAG_DOMAIN_TASK) == "rotation" for run in runs):
            learned = (
                "network trained to predict the rotation (0/90/180/270 degrees) of the "
                f"dataset's unlabelled train images (rotation accuracy {accuracy})"
            )
        else:
            learned = (
                "classifier trained on the dataset's labelled train split "
                f"(test accuracy {accuracy})"
            )
        parts.append(
            f"domain: features of the harness's own {learned}; not comparable to Inception FIDs"
        )
    if any(keys.fid_key("inception") in run.data.metrics for run in runs):
        parts.append(f"Inception: {inception_protocol(runs)}")
    else:
        skipped = _distinct([run.data.tags.get(keys.TAG_INCEPTION_SKIPPED) for run in runs])
        parts.append(f"Inception: not computed ({skipped})")
    return "; ".join(parts)


def inception_protocol(runs: list[Run]) -> str:
    """How the Inception numbers were made, from the runs: N samples against which images of
    which split, and where the weights came from (the inception_source tags)."""
    runs = [run for run in runs if keys.fid_key("inception") in run.data.metrics]
    params = {
        name: _distinct([run.data.params.get(name) for run in runs])
        for name in ("evaluation.num_samples", "dataset.eval_split", "dataset.eval_limit")
    }
    limit = params["dataset.eval_limit"]
    reference = "all of it" if limit == "None" else f"a seeded subset of {limit} images"
    sources = _distinct([run.data.tags.get(keys.TAG_INCEPTION_SOURCE) for run in runs])
    return (
        "standard Inception-v3 pool features (torch-fidelity's extractor and TF1 bilinear resize "
        "to 299 x 299, grayscale repeated to RGB, float32 features, float64 statistics): "
        f"{params['evaluation.num_samples']} samples against the "
        f"{params['dataset.eval_split']} split ({reference}); weights: {sources}"
    )


def _labels_by_run(cells: pd.DataFrame) -> dict[str, str]:
    """run_id -> the report's name of its variant (which, by experiment name, may not be the
    label tag alone)."""
    present = cells.dropna(subset=["run_id"])
    return dict(zip(present["run_id"], present["label"], strict=True))


def _runs_by_label(runs: list[Run], labels: dict[str, str]) -> dict[str, list[Run]]:
    """Runs per variant name, in the report's variant order (labels follows the cells)."""
    by_id = {run.info.run_id: run for run in runs}
    grouped: dict[str, list[Run]] = {}
    for run_id, label in labels.items():
        if run_id in by_id:
            grouped.setdefault(label, []).append(by_id[run_id])
    return grouped


def optimizer_settings(runs: list[Run], labels: dict[str, str]) -> dict[str, dict[str, str | None]]:
    """label -> resolved optimizer settings (optimizer.* params) of its runs; None where the
    variant has no such setting (lr_d without a discriminator) or its runs predate them."""
    settings = {}
    for label, group in _runs_by_label(runs, labels).items():
        values = {
            name: _distinct([run.data.params.get(f"optimizer.{name}") for run in group])
            for name in OPTIMIZER_PARAMS
        }
        settings[label] = {k: (None if v == NOT_RECORDED else v) for k, v in values.items()}
    return settings


def _variant_ids(runs: list[Run], labels: dict[str, str]) -> dict[str, str]:
    return {
        label: _distinct([run.data.tags.get(keys.TAG_VARIANT_ID) for run in group])
        for label, group in _runs_by_label(runs, labels).items()
    }


def _variant_options(runs: list[Run], labels: dict[str, str]) -> dict[str, str]:
    options: dict[str, str] = {}
    for label, group in _runs_by_label(runs, labels).items():
        run = group[0]
        params = run.data.params
        chosen = sorted(
            (k.removeprefix("options."), v) for k, v in params.items() if k.startswith("options.")
        )
        model = run.data.tags.get(keys.TAG_MODEL, "?")
        options[label] = f"{model}({', '.join(f'{k}={v}' for k, v in chosen)})"
    return options


def _suite_text(
    client: MlflowClient, run_ids: list[str], suite_file: Path | None
) -> tuple[str | None, str]:
    """The suite file as logged with the runs (the first of `run_ids` that logged it), else the
    file given on the command line."""
    for run_id in run_ids:
        names = {a.path for a in client.list_artifacts(run_id)}
        if keys.ARTIFACT_SUITE in names:
            with tempfile.TemporaryDirectory() as folder:
                local = download(client, run_id, keys.ARTIFACT_SUITE, folder)
                return local.read_text(), f"logged with run {run_id}"
    if suite_file is not None:
        return suite_file.read_text(), f"{suite_file} (not logged with the runs)"
    return None, "not logged with the runs"


def _distinct(values: list[str | None]) -> str:
    """One value, NOT_RECORDED, or "mixed: a (n runs), b (m runs)" when runs disagree."""
    present = [v for v in values if v not in (None, "")]
    if not present:
        return NOT_RECORDED
    counts = pd.Series(present).value_counts()
    if len(counts) == 1:
        return str(counts.index[0])
    return "mixed: " + ", ".join(f"{value} ({n} runs)" for value, n in counts.items())
