"""Every MLflow key the harness writes, in one place; the runner writes them, the report reads them.

Metrics
    train/<loss>          mean of a training loss over each logging window, with step = train step
                          (loss names are the keys a variant's train_step returns, e.g. loss_d, kl)
    train_seconds         wall time of the training loop of the cell
    train_images_per_s    real training images consumed per second by the training loop
    cell_seconds          wall time of the whole cell (data to device excluded, artifacts included)

Tags
    suite, cell_id, model, label, seed, status ("finished" | "failed"), failure_reason

Artifacts
    cell.json             resolved configuration of the cell (the input of its id)
    samples.png           grid of samples from the prior (fixed latent noise per seed)
    reconstructions.png   evaluation images (odd rows) above their reconstructions (even rows);
                          only for variants with an encoder
    checkpoint/model.pt   {"model": state_dict, "optimizers": {...}, "config": ...};
                          load with torch.load(..., weights_only=True)
"""

TRAIN_PREFIX = "train/"
TRAIN_SECONDS = "train_seconds"
TRAIN_IMAGES_PER_S = "train_images_per_s"
CELL_SECONDS = "cell_seconds"

TAG_SUITE = "suite"
TAG_CELL_ID = "cell_id"
TAG_MODEL = "model"
TAG_LABEL = "label"
TAG_SEED = "seed"
TAG_STATUS = "status"
TAG_FAILURE = "failure_reason"
STATUS_FINISHED = "finished"
STATUS_FAILED = "failed"

ARTIFACT_CONFIG = "cell.json"
ARTIFACT_SAMPLES = "samples.png"
ARTIFACT_RECONSTRUCTIONS = "reconstructions.png"
ARTIFACT_CHECKPOINT_DIR = "checkpoint"
CHECKPOINT_FILE = "model.pt"


def train_key(loss_name: str) -> str:
    return TRAIN_PREFIX + loss_name
