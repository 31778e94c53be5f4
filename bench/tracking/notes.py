"""A run's note (MLflow's description, in Markdown): its headline metrics first, then the
variant's options, optimizer and budget, where the report is, and how to load the model.
"""

from __future__ import annotations

from mlflow.tracking import MlflowClient

from bench import keys
from bench.suite.expand import Cell
from bench.tracking.inputs import scored_split_name

# The evaluation metrics a reader looks at first: in each run's note and as the columns of the
# suggested runs-table view (RUNS_VIEW).
HEADLINE_METRICS = (
    (keys.fid_key("domain"), "FID, domain features (lower is better)"),
    (keys.kid_key("domain"), "KID, domain features (lower is better)"),
    (keys.coverage_key("domain"), "coverage, domain features (higher is better)"),
    (keys.precision_key("domain"), "precision, domain features (descriptive)"),
    (keys.recall_key("domain"), "recall, domain features (descriptive)"),
    (keys.fid_key("inception"), "FID, Inception features (lower is better)"),
    (keys.RECON_MSE, "reconstruction MSE per pixel, [0, 1] scale (lower is better)"),
    (keys.MODES_COVERED, "classes covered by the samples"),
    (keys.CLASS_KL, "KL divergence, real vs generated class shares (lower is better)"),
    (keys.UNRECOGNISED, "samples the domain classifier assigns to no class"),
)
SUMMARY_METRICS = (  # the note's first line (MLflow shows a note's first lines on a run's page)
    keys.fid_key("domain"),
    keys.coverage_key("domain"),
    keys.RECON_MSE,
)


def format_value(value: float) -> str:
    return f"{value:.4g}"


def run_note(cell: Cell, run_id: str, metrics: dict[str, float]) -> str:
    """The run's description (MLflow's note, Markdown): its headline metrics, what the cell is,
    where to compare it with the suite's other variants and how to sample from it."""
    options = ", ".join(f"{k}={v}" for k, v in sorted(cell.variant.options.items())) or "defaults"
    optimizer = ", ".join(f"{k}={v}" for k, v in sorted(cell.variant.optimizer.items()))
    budget = cell.budget
    unit = "generator updates" if budget.parity == "generator_updates" else "batches"
    length = f"{budget.steps} {unit}" if budget.steps else f"{budget.epochs} epochs ({unit})"
    done = [
        f"{format_value(metrics[key])} {what}"
        for key, what in ((keys.GENERATOR_UPDATES, "generator updates"),
                          (keys.TRAIN_SECONDS, "s of training"))
        if key in metrics
    ]  # fmt: skip
    training = cell.dataset.train_split
    if cell.validation is not None:
        training += " split without the search's validation images"
    else:
        training += " split"
    summary = ", ".join(f"{k} {format_value(metrics[k])}" for k in SUMMARY_METRICS if k in metrics)
    rows = [
        f"| {description} | `{key}` | {format_value(metrics[key])} |"
        for key, description in HEADLINE_METRICS
        if key in metrics
    ]
    lines = [
        f"**{cell.variant.label}**, seed {cell.seed}: {summary}",
        "",
        f"Model `{cell.variant.model}` of suite `{cell.suite}` (cell `{cell.id}`). Compare it "
        f"with the other variants, over seeds, in `reports/{cell.suite}/report.html` "
        f"(`uv run bench report {cell.suite}`).",
        "",
        "| headline metric | key | value |",
        "|---|---|---|",
        *rows,
        "",
        f"- options: {options}",
        f"- optimizer: {optimizer}",
        f"- budget: {length}, batch {budget.batch_size}, latent {budget.latent_dim}, "
        f"width {budget.width}" + (f"; done: {', '.join(done)}" if done else ""),
        f"- data: `{cell.dataset.name}`, {training} for training, "
        f"{scored_split_name(cell)} for evaluation (the run's datasets)",
        "",
        "Domain features come from the harness's own classifier of this dataset: those scores "
        "are not Inception scores.",
        "",
        f'Samples: `mlflow.pyfunc.load_model("runs:/{run_id}/model").predict({{"n": 16}})`.',
    ]
    return "\n".join(lines)


def set_note(client: MlflowClient, run_id: str, text: str) -> None:
    client.set_tag(run_id, keys.TAG_NOTE, text)
