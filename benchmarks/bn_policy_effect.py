"""The effect of the evaluation's decoder batch-norm policy on the metrics of trained models.

    uv run python benchmarks/bn_policy_effect.py EXPERIMENT [--tracking-uri URI] [--seeds 0]

For every finished run of the experiment (filtered by seed), loads the trained weights from its
`checkpoint/model.pt`, rebuilds the cell's evaluation (dataset, splits, evaluation settings from
its `cell.json`) and evaluates the model twice, identically but for `evaluation.batch_norm`:
"running" (the statistics training left) and "recalibrate" (re-estimated on the latents about to
be decoded, the default). Prints domain FID, recall and recon MSE under both policies per run and
the mean change per variant. Prints figures, asserts nothing.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
from collections import defaultdict
from pathlib import Path

import torch

import models
from bench import keys, tracking
from bench.data import load_dataset
from bench.data.config import DatasetConfig
from bench.metrics import evaluate
from bench.metrics.settings import EvaluationConfig
from bench.report.artifacts import download
from bench.run.rescore import hparams_of

POLICIES = ("running", "recalibrate")
SHOWN = (keys.fid_key("domain"), keys.recall_key("domain"), keys.RECON_MSE)


def rebuild(client, run, folder: Path):
    """(model with the run's final weights, its cell.json config)."""
    config = json.loads(download(client, run.info.run_id, keys.ARTIFACT_CONFIG, folder).read_text())
    saved = torch.load(
        download(client, run.info.run_id, keys.ARTIFACT_CHECKPOINT_DIR, folder)
        / keys.CHECKPOINT_FILE,
        weights_only=True,
    )
    return config, hparams_of(config), saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("experiment")
    parser.add_argument("--tracking-uri", default=None)
    parser.add_argument("--seeds", default="0", help="comma-separated seeds to evaluate")
    args = parser.parse_args()
    seeds = {int(s) for s in args.seeds.split(",")}

    client = tracking.connect(args.tracking_uri)
    experiment = tracking.experiment_id(client, args.experiment, create=False)
    runs = [
        run
        for run in client.search_runs([experiment], order_by=["start_time ASC"])
        if run.data.tags.get(keys.TAG_STATUS) == keys.STATUS_FINISHED
        and int(run.data.tags.get(keys.TAG_SEED, -1)) in seeds
    ]
    evaluators: dict[str, evaluate.Evaluator] = {}
    changes: dict[str, list[dict[str, float]]] = defaultdict(list)
    print(f"{'run':<32}" + "".join(f"{key + ' ' + p[:5]:>24}" for key in SHOWN for p in POLICIES))
    for run in runs:
        with tempfile.TemporaryDirectory() as tmp:
            config, hparams, saved = rebuild(client, run, Path(tmp))
        dataset = DatasetConfig(**config["dataset"])
        data_key = json.dumps(config["dataset"], sort_keys=True) + json.dumps(config["evaluation"])
        if data_key not in evaluators:  # data, classifier and real features once per setting
            data = load_dataset(
                dataset.name,
                train_split=dataset.train_split,
                eval_split=dataset.eval_split,
                train_limit=dataset.train_limit,
                eval_limit=dataset.eval_limit,
                subset_seed=dataset.subset_seed,
            )
            evaluation = EvaluationConfig(**config["evaluation"])
            evaluators[data_key] = evaluate.prepare(
                data, dataset, evaluation, torch.device("cpu"), log=lambda _: None
            )
        shared = evaluators[data_key]
        model = models.build(config["model"], config["options"], shared.data.image_shape, hparams)
        model.load_state_dict(saved["model"])
        results = {}
        for policy in POLICIES:  # the same evaluator but for the policy (evaluation restores BN)
            config_policy = shared.config.model_copy(update={"batch_norm": policy})
            evaluator = dataclasses.replace(shared, config=config_policy)
            results[policy], _ = evaluate.evaluate(model, evaluator, config["seed"])
        label = f"{run.data.tags[keys.TAG_LABEL]}/seed{config['seed']}"
        row = "".join(
            f"{results[p][k]:>24.4f}" if k in results[p] else f"{'-':>24}"
            for k in SHOWN
            for p in POLICIES
        )
        print(f"{label:<32}{row}", flush=True)
        changes[run.data.tags[keys.TAG_LABEL]].append(
            {
                k: results["recalibrate"][k] - results["running"][k]
                for k in SHOWN
                if k in results["running"]
            }
        )
    print("\nmean change, recalibrate - running, per variant:")
    for label, rows in changes.items():
        means = {k: sum(r[k] for r in rows) / len(rows) for k in rows[0]}
        print(f"  {label:<28} " + ", ".join(f"{k} {v:+.4f}" for k, v in means.items()))


if __name__ == "__main__":
    main()
