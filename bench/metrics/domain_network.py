"""The domain network itself: a small CNN classifier (or, for unlabelled data, a rotation
predictor, Gidaris et al. 2018) and how it is trained and measured on a dataset's own train split.
bench/metrics/domain.py caches it, extracts its features and registers it with torch-fidelity.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F

from bench.data.images import Split

FEATURE_DIM = 128
CLASSES, ROTATION = "classes", "rotation"  # the domain network's task: labels, or rotations
ROTATIONS = 4


def _conv_bn_relu(in_channels: int, out_channels: int) -> list[nn.Module]:
    # no conv bias: batch norm's shift makes it redundant
    return [
        nn.Conv2d(in_channels, out_channels, 3, padding=1, bias=False),
        nn.BatchNorm2d(out_channels),
        nn.ReLU(inplace=True),
    ]


class DomainClassifier(nn.Module):
    """conv-bn-relu x2, pool, conv-bn-relu x2, pool, linear to a 128-d ReLU layer (the features),
    dropout, linear to logits. Input: float images in [0, 1], (N, C, H, W).

    Width 16 (then 32 after the first pool) is enough: 3 epochs give ~92% on Fashion-MNIST in
    under a minute on 2 CPU cores, where width 32 gains under a point for 2.7x the time."""

    def __init__(
        self,
        image_shape: tuple[int, int, int],
        num_classes: int,
        width: int = 16,
        task: str = CLASSES,
    ):
        super().__init__()
        in_channels, height, image_width = image_shape
        self.image_shape = tuple(image_shape)
        self.num_classes = num_classes
        self.width = width
        self.task = task
        self.body = nn.Sequential(
            *_conv_bn_relu(in_channels, width),
            *_conv_bn_relu(width, width),
            nn.MaxPool2d(2),
            *_conv_bn_relu(width, 2 * width),
            *_conv_bn_relu(2 * width, 2 * width),
            nn.MaxPool2d(2),
            nn.Flatten(),
            nn.Linear(2 * width * (height // 4) * (image_width // 4), FEATURE_DIM),
            nn.ReLU(inplace=True),
        )
        self.dropout = nn.Dropout(0.3)
        self.head = nn.Linear(FEATURE_DIM, num_classes)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate-layer activations (N, 128): the domain feature space."""
        return self.body(x)

    def features_and_logits(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Both outputs of one pass through the body: the logits are the head on the features."""
        features = self.features(x)
        return features, self.head(self.dropout(features))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.features_and_logits(x)[1]


def to_input(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [0, 1], the classifier's input: the one conversion both `extract`
    and the torch-fidelity extractor use, so that their features are the same numbers."""
    return images.float().div(255.0)


def check_input(images: torch.Tensor, image_shape: tuple[int, int, int]) -> None:
    if not (torch.is_tensor(images) and images.dtype == torch.uint8):
        raise ValueError("the domain feature extractor expects uint8 image tensors")
    if tuple(images.shape[1:]) != tuple(image_shape):
        raise ValueError(
            f"images of shape {tuple(images.shape[1:])} given to a domain classifier trained on "
            f"{tuple(image_shape)}"
        )


def task_for(num_classes: int) -> str:
    """The domain network's task: the classes when the data has them (num_classes > 0), else the
    rotations."""
    return CLASSES if num_classes > 0 else ROTATION


def task_batch(
    classifier: DomainClassifier, images: torch.Tensor, labels: torch.Tensor | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs in [0, 1], targets) of one batch of uint8 images for the network's task: the images
    and their classes, or every image in each of the four rotations and the rotation's index."""
    x = to_input(images)
    if classifier.task == CLASSES:
        return x, labels
    rotated = torch.cat([torch.rot90(x, k, dims=(2, 3)) for k in range(ROTATIONS)])
    targets = torch.arange(ROTATIONS, device=x.device).repeat_interleave(len(x))
    return rotated, targets


def train_classifier(
    split: Split,
    image_shape: tuple[int, int, int],
    num_classes: int,
    device: torch.device | str,
    epochs: int,
    batch_size: int,
    seed: int,
) -> DomainClassifier:
    """Adam with a one-cycle learning rate (fast convergence in few epochs), whole split on the
    device (uint8, converted per batch), reshuffled there each epoch. num_classes 0 trains the
    rotation task. Returns the classifier in eval mode."""
    device = torch.device(device)
    task = task_for(num_classes)
    images = split.images.to(device)
    labels = split.labels.to(device) if task == CLASSES else None
    batch_size = min(batch_size, len(images))
    # the last partial batch is dropped: batch norm and a one-image batch do not mix
    steps_per_epoch = len(images) // batch_size
    # Fork the global RNG so that training here (or loading from the cache instead) leaves the
    # caller's random stream, hence its models' initialisation, exactly as it was.
    rng_devices = [device.index or torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(seed)
        shuffle = torch.Generator(device=device).manual_seed(seed)
        outputs = num_classes if task == CLASSES else ROTATIONS
        classifier = DomainClassifier(image_shape, outputs, task=task).to(device)
        optimizer = torch.optim.Adam(classifier.parameters())  # learning rate: the schedule's
        schedule = torch.optim.lr_scheduler.OneCycleLR(
            optimizer, max_lr=3e-3, total_steps=max(1, epochs * steps_per_epoch)
        )
        classifier.train()
        for _ in range(epochs):
            order = torch.randperm(len(images), generator=shuffle, device=device)
            for step in range(steps_per_epoch):
                index = order[step * batch_size : (step + 1) * batch_size]
                batch_labels = labels[index] if labels is not None else None
                inputs, targets = task_batch(classifier, images[index], batch_labels)
                loss = F.cross_entropy(classifier(inputs), targets)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
    return classifier.eval()


@torch.no_grad()
def measure_accuracy(
    classifier: DomainClassifier,
    split: Split,
    device: torch.device | str,
    batch_size: int = 1000,
) -> float:
    """Share of test images whose class (or, for the rotation task, rotation: each image in all
    four) the network predicts right."""
    classifier.eval()
    if classifier.task != CLASSES:
        batch_size = max(1, batch_size // ROTATIONS)  # each image goes in four times
    correct, total = 0, 0
    for i in range(0, len(split.images), batch_size):
        images = split.images[i : i + batch_size].to(device)
        labels = None
        if classifier.task == CLASSES:
            labels = split.labels[i : i + batch_size].to(device)
        inputs, targets = task_batch(classifier, images, labels)
        correct += int((classifier(inputs).argmax(1) == targets).sum())
        total += len(targets)
    return correct / total
