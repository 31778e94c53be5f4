"""A researcher's own data: image folders (class tree or flat), .npz arrays, CelebA's layout, the
declared preprocessing, uint8 storage on the device, the rotation domain network for unlabelled
data, and `bench score` for samples from any model. Everything here writes its own images."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torchvision.io import encode_jpeg, write_png
from torchvision.transforms.v2 import functional as TF

from bench import keys
from bench.cli import main
from bench.data import DeviceMemoryError, load_dataset, on_device, synthetic_split, to_model_range
from bench.data.image_files import ImageFileError
from bench.data.preprocess import Preprocessing
from bench.metrics import domain, domain_network, fidelity
from bench.metrics.evaluate import KID_SUBSET_SIZE
from bench.run.train import ShuffledBatches

FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")
CLASS_NAMES = [f"{c}-class" for c in range(10)]


def write_images(folder: Path, images: torch.Tensor, labels: torch.Tensor | None = None) -> None:
    """PNG files numbered in order: flat, or in one subfolder per class."""
    for i, image in enumerate(images):
        target = folder if labels is None else folder / CLASS_NAMES[int(labels[i])]
        target.mkdir(parents=True, exist_ok=True)
        write_png(image, str(target / f"{i:05d}.png"))


def by_class(images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The order an ImageFolder reads a class tree in: by class, then by file name."""
    order = torch.sort(labels, stable=True).indices
    return images[order], labels[order]


def idx_or_synthetic(source: str):
    if source == "synthetic":
        return load_dataset("synthetic", train_limit=120, eval_limit=60)
    if not FASHION_ROOT.is_dir():
        pytest.skip(f"Fashion-MNIST not in {FASHION_ROOT} (Debian's dataset-fashion-mnist)")
    return load_dataset("fashion-mnist", root=FASHION_ROOT, train_limit=300, eval_limit=100)


@pytest.mark.parametrize("source", ["fashion-mnist", "synthetic"])
def test_a_png_class_tree_gives_the_same_tensors_as_the_idx_files(source, tmp_path):
    reference = idx_or_synthetic(source)
    for split, folder in ((reference.train, "train"), (reference.eval, "test")):
        write_images(tmp_path / "tree" / folder, split.images, split.labels)

    data = load_dataset("folder", root=tmp_path / "tree", preprocessing=Preprocessing(channels=1))

    assert data.labelled and data.num_classes == reference.num_classes
    for mine, theirs in ((data.train, reference.train), (data.eval, reference.eval)):
        images, labels = by_class(theirs.images, theirs.labels)
        assert mine.images.dtype == torch.uint8
        assert torch.equal(mine.images, images)
        assert torch.equal(mine.labels, labels)
    # image files are RGB unless told otherwise: the grey repeated on three channels
    rgb = load_dataset("folder", root=tmp_path / "tree", cache_dir=tmp_path / "cache")
    assert rgb.image_shape == (3, *reference.image_shape[1:])
    assert torch.equal(rgb.train.images, data.train.images.expand(-1, 3, -1, -1))


def test_a_flat_folder_is_unlabelled_and_split_with_a_seeded_fraction(tmp_path):
    images = synthetic_split(100, "train", 32, 3).images
    write_images(tmp_path / "flat", images)

    data = load_dataset("folder", root=tmp_path / "flat", eval_fraction=0.2, split_seed=3)
    again = load_dataset("folder", root=tmp_path / "flat", eval_fraction=0.2, split_seed=3)
    other = load_dataset("folder", root=tmp_path / "flat", eval_fraction=0.2, split_seed=4)

    assert not data.labelled and data.num_classes == 0
    assert data.train.labels is None and data.eval.labels is None
    assert (len(data.train.images), len(data.eval.images)) == (80, 20)
    assert torch.equal(data.eval.images, again.eval.images)
    assert not torch.equal(data.eval.images, other.eval.images)
    together = torch.cat([data.train.images, data.eval.images]).flatten(1)
    assert len(torch.unique(together, dim=0)) == len(torch.unique(images.flatten(1), dim=0))
    assert "0.2" in data.split_rule and "seed 3" in data.split_rule


def test_decoded_folders_are_cached_per_preprocessing(tmp_path, monkeypatch):
    write_images(tmp_path / "flat", synthetic_split(40, "train", 32, 3).images)
    cache = tmp_path / "cache"
    small = load_dataset("folder", root=tmp_path / "flat", cache_dir=cache)
    large = load_dataset(
        "folder", root=tmp_path / "flat", cache_dir=cache, preprocessing=Preprocessing(24, 64)
    )
    assert small.image_shape == (3, 32, 32) and large.image_shape == (3, 64, 64)
    assert len(list((cache / "decoded").glob("*.pt"))) == 2
    assert small.cache_tag == "folder" and large.cache_tag == "folder-crop24-size64"
    assert domain.cache_path(small.cache_tag, "f", cache) != domain.cache_path(
        large.cache_tag, "f", cache
    )

    from bench.data import image_files

    def no_decoding(*args, **kwargs):
        raise AssertionError("decoded again although the folder is cached")

    monkeypatch.setattr(image_files, "decode_files", no_decoding)
    cached = load_dataset(
        "folder", root=tmp_path / "flat", cache_dir=cache, preprocessing=Preprocessing(24, 64)
    )
    assert torch.equal(cached.train.images, large.train.images)


def test_preprocessing_is_a_centre_crop_then_a_resize(tmp_path):
    image = torch.zeros(1, 3, 40, 40, dtype=torch.uint8)
    image[:, :, 10:30, 10:30] = 200  # a square that a 20x20 centre crop keeps whole
    out = Preprocessing(crop=20, image_size=28, channels=1).apply(image)
    assert out.shape == (1, 1, 28, 28) and out.dtype == torch.uint8
    assert 198 <= int(out.min()) <= int(out.max()) <= 200  # bilinear rounding at most 2 off


def test_npz_arrays_with_and_without_labels(tmp_path):
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (20, 28, 28, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, (8, 28, 28, 3), dtype=np.uint8)
    np.savez(tmp_path / "own.npz", x_train=x_train, x_test=x_test, y_train=np.arange(20) % 4,
             y_test=np.arange(8) % 4)  # fmt: skip
    np.savez(tmp_path / "bare.npz", x_train=x_train[..., 0], x_test=x_test[..., 0])

    data = load_dataset("npz", root=tmp_path / "own.npz")
    bare = load_dataset("npz", root=tmp_path / "bare.npz")

    assert data.image_shape == (3, 28, 28) and data.num_classes == 4
    assert torch.equal(data.train.images, torch.from_numpy(x_train).permute(0, 3, 1, 2))
    assert bare.image_shape == (1, 28, 28) and not bare.labelled


def test_npz_that_is_not_uint8_images_is_refused(tmp_path):
    np.savez(tmp_path / "floats.npz", x_train=np.zeros((4, 28, 28)), x_test=np.zeros((4, 28, 28)))
    np.savez(tmp_path / "one.npz", x_train=np.zeros((4, 28, 28), dtype=np.uint8))
    with pytest.raises(ImageFileError, match="dtype float64; store uint8"):
        load_dataset("npz", root=tmp_path / "floats.npz")
    with pytest.raises(ImageFileError, match="no array 'x_test'"):
        load_dataset("npz", root=tmp_path / "one.npz")


def test_celeba_layout_with_the_usual_64_pixel_preprocessing(tmp_path):
    base = tmp_path / "celeba"
    (base / "img_align_celeba").mkdir(parents=True)
    lines = []
    generator = torch.Generator().manual_seed(0)
    for i, partition in enumerate([0, 0, 0, 1, 2, 2, 0, 2]):
        name = f"{i + 1:06d}.jpg"
        image = torch.randint(0, 256, (3, 218, 178), dtype=torch.uint8, generator=generator)
        (base / "img_align_celeba" / name).write_bytes(encode_jpeg(image).numpy().tobytes())
        lines.append(f"{name} {partition}")
    (base / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")

    from bench.data.config import DatasetConfig

    config = DatasetConfig(name="celeba", root=str(tmp_path))
    assert (config.crop, config.image_size) == (148, 64)
    data = load_dataset("celeba", root=tmp_path, cache_dir=tmp_path / "c", **config.load_options())

    assert data.image_shape == (3, 64, 64) and not data.labelled
    assert (len(data.train.images), len(data.eval.images)) == (4, 3)  # partitions 0 and 2


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda root: None, "does not exist"),
        (lambda root: root.mkdir(), "no PNG or JPEG images"),
        (
            lambda root: (root / "a.png").parent.mkdir() or (root / "a.png").write_bytes(b"no"),
            "a.png: cannot be decoded",
        ),  # fmt: skip
        ("mixed", "images of different sizes"),
    ],
    ids=["missing", "empty", "corrupt", "mixed-sizes"],
)
def test_unreadable_folders_fail_with_one_line(make, expected, tmp_path):
    root = tmp_path / "images"
    if make == "mixed":
        root.mkdir()
        write_png(torch.zeros(3, 32, 32, dtype=torch.uint8), str(root / "a.png"))
        write_png(torch.zeros(3, 28, 28, dtype=torch.uint8), str(root / "b.png"))
    else:
        make(root)
    with pytest.raises((ImageFileError, FileNotFoundError)) as raised:
        load_dataset("folder", root=root, cache_dir=tmp_path / "c")
    message = str(raised.value)
    assert expected in message and "\n" not in message


def test_uint8_device_storage_gives_the_same_batches_as_float_storage():
    images = synthetic_split(100, "train").images
    stored = ShuffledBatches(images, 16, torch.Generator().manual_seed(5))
    floats = ShuffledBatches(to_model_range(images), 16, torch.Generator().manual_seed(5))
    for _ in range(15):  # 6 batches per epoch: two reshuffles
        a, b = next(stored), next(floats)
        assert a.dtype == torch.float32 and torch.equal(a, b)


def test_a_dataset_too_large_for_the_gpu_fails_with_its_size(monkeypatch):
    # no GPU here: torch.cuda.mem_get_info is the one part replaced (1 MiB free of 8 GiB)
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (2**20, 8 * 2**30))
    images = torch.zeros(200, 3, 64, 64, dtype=torch.uint8)  # 2.3 MiB
    with pytest.raises(DeviceMemoryError) as raised:
        on_device(images, "cuda", "training set")
    message = str(raised.value)
    assert "200 x 3 x 64 x 64 uint8" in message and "0.00 GiB free of 8.00 GiB" in message


@pytest.fixture(scope="module")
def rotation_space(tmp_path_factory):
    """A rotation network trained on unlabelled synthetic RGB images, and held-out real images."""
    train = synthetic_split(768, "train", 32, 3)
    held_out = synthetic_split(256, "test", 32, 3)
    network, accuracy = domain.load_or_train(
        "unlabelled",
        "test",
        domain.Split(train.images, None),
        domain.Split(held_out.images, None),
        (3, 32, 32),
        0,
        "cpu",
        cache_dir=tmp_path_factory.mktemp("rotation"),
        log=lambda line: None,
    )
    return network, accuracy, held_out.images


def test_the_rotation_network_learns_rotations(rotation_space):
    network, accuracy, _ = rotation_space
    assert network.task == domain_network.ROTATION and network.num_classes == 4
    assert accuracy > 0.6  # chance is 0.25


def test_fid_in_the_rotation_space_grows_with_blur_and_noise(rotation_space):
    network, _, real = rotation_space

    def fid(images: torch.Tensor) -> float:
        fake = domain.extract(network, images, 128, "cpu").features
        reference = domain.extract(network, real, 128, "cpu").features
        return fidelity.feature_metrics("domain", fake, reference, KID_SUBSET_SIZE, False)[
            keys.fid_key("domain")
        ]

    blurred = [fid(TF.gaussian_blur(real, [9, 9], [sigma, sigma])) for sigma in (0.6, 1.2, 2.4)]
    generator = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, real.shape, dtype=torch.uint8, generator=generator)
    noised = (real.float() + 40 * torch.randn(real.shape, generator=generator)).clamp(0, 255)

    assert fid(real) < 1e-3
    assert fid(real) < blurred[0] < blurred[1] < blurred[2]
    assert fid(noised.round().to(torch.uint8)) > blurred[0]
    assert fid(noise) > blurred[2]


def score_json(*args: str) -> tuple[int, dict | str]:
    # the domain space only: Inception on 2 CPU cores is ~8 images/s (tests/test_fidelity.py and
    # tests/test_inception_weights.py cover `bench score`'s Inception metrics)
    result = CliRunner().invoke(
        main, ["score", *args, "--no-inception", "--format", "json", "--device", "cpu"]
    )
    if result.exit_code != 0:
        return result.exit_code, result.output
    return 0, json.loads(result.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def image_sets(tmp_path_factory):
    root = tmp_path_factory.mktemp("score")
    real = synthetic_split(1000, "train", 32, 3)  # enough for 3 epochs of a classifier on 90%
    write_images(root / "real", real.images, real.labels)
    noise = torch.randint(0, 256, (1000, 3, 32, 32), dtype=torch.uint8)
    np.savez(root / "noise.npz", x=noise.permute(0, 2, 3, 1).numpy())
    write_images(root / "flat", real.images[:300])
    return root


def test_score_of_real_against_itself_and_against_noise(image_sets):
    real = str(image_sets / "real")
    code, same = score_json(real, real, "--train-domain")
    assert code == 0, same
    code, noise = score_json(real, str(image_sets / "noise.npz"), "--train-domain")
    assert code == 0, noise
    fid = keys.fid_key("domain")
    # REAL is scored against its held-out 10%: near, not at, zero
    assert 0 < same[fid] < noise[fid] / 100
    # a class tree trains a classifier: mode coverage comes with it
    assert same[keys.MODES_COVERED] == 10 and noise[keys.MODES_COVERED] < 10


def test_train_domain_scores_against_the_held_out_part_of_real_only(image_sets, tmp_path):
    """With --train-domain the feature network learns 90% of REAL; the real side of every metric
    is the other 10%, which it never saw. So FAKE = that held-out part is REAL's own
    distribution exactly (FID ~ 0), and FAKE = the 90% it trained on is not."""
    from bench.data.datasets import split_pool
    from bench.data.preprocess import Preprocessing
    from bench.metrics.score import SCORE_HELD_OUT, SCORE_SPLIT_SEED, read_image_set

    real = str(image_sets / "real")
    pool = read_image_set(real, Preprocessing(channels=3), progress=False)
    trained_on, held_out = split_pool(pool, SCORE_HELD_OUT, SCORE_SPLIT_SEED)
    for name, part in (("held_out", held_out), ("trained_on", trained_on)):
        np.savez(tmp_path / f"{name}.npz", x=part.images.permute(0, 2, 3, 1).numpy())
    code, on_held_out = score_json(real, str(tmp_path / "held_out.npz"), "--train-domain")
    assert code == 0, on_held_out
    code, on_trained = score_json(real, str(tmp_path / "trained_on.npz"), "--train-domain")
    assert code == 0, on_trained
    fid = keys.fid_key("domain")
    assert abs(on_held_out[fid]) < 1e-6
    assert on_held_out[keys.coverage_key("domain")] == 1.0
    assert on_trained[fid] > 1e-3


def test_score_keys_are_the_keys_a_run_logs(image_sets, write_suite, tracking_uri):
    suite = write_suite(
        f"""
        name: flat
        dataset: {{name: folder, root: {image_sets / "flat"}, eval_fraction: 0.25}}
        budget: {{steps: 2, batch_size: 16, latent_dim: 8, width: 8, n_critic: 1}}
        seeds: [0]
        evaluation: {{num_samples: 64, batch_size: 32, calibration_samples: 64, grid_size: 16,
                     feature_extractors: [domain],
                     interp_pairs: 2}}
        models: [{{label: dcgan, model: dcgan}}]
        """
    )
    result = CliRunner().invoke(
        main, ["run", str(suite), "--tracking-uri", tracking_uri, "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    run = mlflow.MlflowClient(tracking_uri).search_runs(
        [mlflow.MlflowClient(tracking_uri).get_experiment_by_name("flat").experiment_id]
    )[0]
    run_keys = set(run.data.metrics)
    flat = str(image_sets / "flat")
    code, scored = score_json(flat, flat, "--train-domain")
    assert code == 0, scored
    assert set(scored) <= run_keys
    assert set(scored) == {k for k in run_keys if "_domain" in k and not k.startswith("interp")}
    # unlabelled: no classes, so mode coverage is absent from both, never 0
    assert keys.MODES_COVERED not in run_keys and keys.MODES_COVERED not in scored


@pytest.mark.parametrize(
    "real, fake, extra, expected",
    [
        ("missing", "real", ["--train-domain"], "neither a folder"),
        ("empty", "real", ["--train-domain"], "no PNG or JPEG images"),
        ("real", "small", ["--train-domain"], "bring both to one size"),
        ("real", "corrupt", ["--train-domain"], "cannot be decoded"),
        ("real", "real", [], "pass either --dataset NAME or --train-domain"),
    ],
)
def test_score_bad_input_exits_2_with_one_line(real, fake, extra, expected, image_sets, tmp_path):
    (tmp_path / "empty").mkdir()
    write_images(tmp_path / "small", torch.zeros(4, 3, 28, 28, dtype=torch.uint8))
    (tmp_path / "corrupt").mkdir()
    (tmp_path / "corrupt" / "x.png").write_bytes(b"not a png")
    paths = {
        "real": str(image_sets / "real"),
        "missing": str(tmp_path / "missing"),
        "empty": str(tmp_path / "empty"),
        "small": str(tmp_path / "small"),
        "corrupt": str(tmp_path / "corrupt"),
    }
    result = CliRunner().invoke(
        main, ["score", paths[real], paths[fake], *extra, "--device", "cpu"]
    )
    assert result.exit_code == 2
    lines = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and expected in lines[0]


def test_a_flat_64_pixel_folder_trains_every_variant_without_labels(tmp_path, tracking_uri):
    images = Preprocessing(image_size=64).apply(synthetic_split(96, "train", 32, 3).images)
    write_images(tmp_path / "faces", images)
    suite = tmp_path / "suite.yaml"
    suite.write_text(
        textwrap.dedent(
            f"""
            name: own64
            dataset: {{name: folder, root: {tmp_path / "faces"}, eval_fraction: 0.25}}
            budget: {{steps: 2, batch_size: 8, latent_dim: 8, width: 8, n_critic: 1}}
            seeds: [0]
            evaluation: {{num_samples: 32, batch_size: 16, calibration_samples: 64, grid_size: 16,
                         feature_extractors: [domain], interp_pairs: 2}}
            models:
              - {{label: vae, model: vae}}
              - label: dcgan-{{loss}}
                model: dcgan
                grid: {{loss: [bce, wgan-gp]}}
              - label: vaegan-{{recon}}-{{adversarial}}
                model: vaegan
                grid: {{recon: [pixel, disfeat], adversarial: [bce, wgan-gp]}}
            """
        )
    )
    result = CliRunner().invoke(
        main, ["run", str(suite), "--tracking-uri", tracking_uri, "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    client = mlflow.MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("own64").experiment_id])
    finished = [
        r for r in runs if r.info.status == "FINISHED" and keys.fid_key("domain") in r.data.metrics
    ]
    assert len(finished) == 7
    for run in finished:
        assert run.data.tags[keys.TAG_DOMAIN_TASK] == domain_network.ROTATION
        assert "0.25" in run.data.tags[keys.TAG_DATA_SPLIT_RULE]
        assert run.data.tags[keys.TAG_DATA_SOURCE] == str(tmp_path / "faces")
        assert keys.fid_key("domain") in run.data.metrics
        assert keys.MODES_COVERED not in run.data.metrics
        assert keys.CLASS_KL not in run.data.metrics


def test_bench_images_writes_a_folder_that_reads_back_as_the_dataset(tmp_path):
    out = tmp_path / "tree"
    result = CliRunner().invoke(
        main, ["images", "synthetic", str(out), "--train-limit", "40", "--eval-limit", "20"]
    )
    assert result.exit_code == 0, result.output
    reference = load_dataset("synthetic", train_limit=40, eval_limit=20)
    data = load_dataset("folder", root=out, preprocessing=Preprocessing(channels=1))
    for mine, theirs in ((data.train, reference.train), (data.eval, reference.eval)):
        images, labels = by_class(theirs.images, theirs.labels)
        assert torch.equal(mine.images, images) and torch.equal(mine.labels, labels)
    again = CliRunner().invoke(main, ["images", "synthetic", str(out)])
    assert again.exit_code == 2 and "not empty" in again.stderr


def test_score_reads_greyscale_files_with_the_named_networks_channels(tmp_path):
    """Greyscale PNGs of a greyscale dataset score in its domain network without --channels;
    colour files against that network are a genuine mismatch: one line with the fix."""
    grey = synthetic_split(200, "test", 28, 1)
    write_images(tmp_path / "grey", grey.images, grey.labels)
    code, scored = score_json(
        str(tmp_path / "grey"), str(tmp_path / "grey"), "--dataset", "synthetic"
    )
    assert code == 0, scored
    assert abs(scored[keys.fid_key("domain")]) < 1e-3
    colour = synthetic_split(200, "test", 28, 3)
    write_images(tmp_path / "colour", colour.images)
    code, output = score_json(
        str(tmp_path / "grey"), str(tmp_path / "colour"), "--dataset", "synthetic"
    )
    assert code == 2
    lines = output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "colour" in lines[0] and "--channels 1" in lines[0]
