"""Every input a user can get wrong ends in one line naming the file, field or option and what is
allowed, exit status 2, no traceback, and nothing written to the tracking store."""

from __future__ import annotations

import gzip
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from bench.cli import main
from tests.tiny_suites import VAE, tiny_suite

VAEGANS = (
    "  - label: vaegan-{adversarial}\n    model: vaegan\n    grid: {adversarial: [bce, wgan-gp]}\n"
)
SUITE = tiny_suite("bad", VAE + VAEGANS)
DATASET = "  name: synthetic\n  train_limit: 64\n  eval_limit: 32\n"


def mnist_like(root: Path, train: int = 40, test: int = 20, corrupt: bool = False) -> Path:
    """A tiny MNIST-style folder of gzipped IDX files (or files with the right names and
    garbage inside)."""
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", train), ("t10k", test)):
        images = struct.pack(">BBBBIII", 0, 0, 8, 3, n, 28, 28) + bytes(n * 28 * 28)
        labels = struct.pack(">BBBBI", 0, 0, 8, 1, n) + bytes(i % 10 for i in range(n))
        for kind, data in (("images-idx3", images), ("labels-idx1", labels)):
            path = root / f"{prefix}-{kind}-ubyte.gz"
            path.write_bytes(b"not gzip at all" if corrupt else gzip.compress(data))
    return root


# (case, text to replace in SUITE, replacement, what the message must name)
SUITE_CASES = [
    ("unknown top-level field", "seeds: [0]", "seeds: [0]\nseed: 1", "'seed'"),
    ("unknown dataset field", "  train_limit: 64", "  train_limt: 64", "dataset.train_limt"),
    ("unknown budget field", "  log_every: 2", "  log_evry: 2", "budget.log_evry"),
    ("unknown evaluation field", "  grid_size: 16", "  gridsize: 16", "evaluation.gridsize"),
    (
        "unknown model entry field",
        "    model: vae\n",
        "    model: vae\n    option: {}\n",
        "models.0.option",
    ),
    (
        "unknown model option",
        "    model: vae\n",
        "    model: vae\n    options: {kl_wieght: 2}\n",
        "kl_wieght",
    ),
    (
        "unknown grid option",
        "{adversarial: [bce, wgan-gp]}",
        "{adversarial: [bce], gama: [1]}",
        "gama",
    ),
    ("key given twice", "  steps: 4\n", "  steps: 4\n  steps: 8\n", "'steps' is given twice"),
    ("malformed YAML", "seeds: [0]", "seeds: [0", "malformed YAML"),
    ("steps not a number", "steps: 4", "steps: four", "budget.steps"),
    ("seeds not a list", "seeds: [0]", "seeds: 0", "seeds"),
    ("dataset not a mapping", "dataset:\n" + DATASET, "dataset: synthetic\n", "dataset"),
    (
        "option of the wrong type",
        "    model: vae\n",
        "    model: vae\n    options: {kl_weight: heavy}\n",
        "kl_weight",
    ),
    ("betas not a pair", "  log_every: 2", "  log_every: 2\n  betas: [0.5]", "budget.betas"),
    ("zero steps", "steps: 4", "steps: 0", "budget.steps"),
    ("negative steps", "steps: 4", "steps: -3", "budget.steps"),
    ("zero epochs", "steps: 4", "epochs: 0", "budget.epochs"),
    (
        "zero batch size",
        "  batch_size: 16\n  latent",
        "  batch_size: 0\n  latent",
        "budget.batch_size",
    ),
    ("zero learning rate", "  log_every: 2", "  log_every: 2\n  lr_g: 0", "budget.lr_g"),
    (
        "zero checkpoint interval",
        "  log_every: 2",
        "  log_every: 2\n  checkpoint_every: 0",
        "budget.checkpoint_every",
    ),
    ("negative seed", "seeds: [0]", "seeds: [-1]", "seeds"),
    ("zero samples", "num_samples: 32", "num_samples: 0", "evaluation.num_samples"),
    ("unknown adversarial loss", "[bce, wgan-gp]", "[bce, hinge]", "'adversarial'"),
    ("unknown dataset", "name: synthetic", "name: imagenet", "dataset.name"),
    ("unknown model", "model: vae", "model: vea", "unknown model 'vea'"),
    ("empty model list", SUITE[SUITE.index("models:") :], "models: []\n", "models"),
    ("duplicate labels", "label: vae", "label: vaegan-bce", "duplicate variant label 'vaegan-bce'"),
    ("label leaving the folder", "label: vae", "label: ../x", "models.0.label"),
    ("suite name with a slash", "name: bad", "name: a/b", "'name'"),
    ("suite name '..'", "name: bad", "name: ..", "'name'"),
]


@pytest.fixture
def in_tmp(tmp_path, monkeypatch):
    """Work in tmp_path, so that the default store (./mlflow.db, ./mlruns) would land there."""
    monkeypatch.chdir(tmp_path)
    return tmp_path


def run_bench(folder: Path, suite_text: str, *options: str):
    path = folder / "suite.yaml"
    path.write_text(suite_text)
    store = f"sqlite:///{folder / 'store.db'}"
    args = ["run", str(path), "--tracking-uri", store, "--no-progress", *options]
    return CliRunner().invoke(main, args), path


def assert_user_error(result, *named: str) -> None:
    assert result.exit_code == 2, result.output
    message = result.stderr
    assert message.startswith("error: ") and message.count("\n") == 1, message
    for text in named:
        assert text in message, (text, message)
    assert "Traceback" not in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)


def assert_store_untouched(folder: Path) -> None:
    for written in ("store.db", "mlflow.db", "mlruns"):
        assert not (folder / written).exists(), written


@pytest.mark.parametrize(
    "old, new, named", [c[1:] for c in SUITE_CASES], ids=[c[0] for c in SUITE_CASES]
)
def test_bad_suite_is_one_line_and_writes_nothing(in_tmp, old, new, named):
    assert old in SUITE
    result, path = run_bench(in_tmp, SUITE.replace(old, new, 1))
    assert_user_error(result, str(path), named)
    assert_store_untouched(in_tmp)
    validated = CliRunner().invoke(main, ["validate", str(path)])
    assert_user_error(validated, str(path), named)


def test_malformed_yaml_names_the_line(in_tmp):
    result, path = run_bench(in_tmp, SUITE.replace("steps: 4", "steps: 4: 5"))
    assert_user_error(result, f"{path}: line 7, column 11: malformed YAML")


def test_batch_size_larger_than_the_dataset(in_tmp):
    result, _ = run_bench(
        in_tmp, SUITE.replace("batch_size: 16\n  latent", "batch_size: 128\n  latent")
    )
    assert_user_error(result, "budget.batch_size 128", "64 images")
    assert_store_untouched(in_tmp)


def test_limit_larger_than_the_split(in_tmp):
    root = mnist_like(in_tmp / "data")
    text = SUITE.replace(DATASET, f"  name: mnist\n  root: {root}\n  train_limit: 64\n")
    assert text != SUITE
    result, _ = run_bench(
        in_tmp, text.replace("batch_size: 16\n  latent", "batch_size: 8\n  latent")
    )
    assert_user_error(result, "dataset.train_limit 64", "40 images")
    assert_store_untouched(in_tmp)


@pytest.mark.parametrize(
    "make_root, named",
    [
        (lambda tmp: tmp / "nowhere", ["does not exist", "dataset.root"]),
        (lambda tmp: (tmp / "empty").mkdir() or tmp / "empty", ["dataset 'mnist' not found"]),
        (lambda tmp: mnist_like(tmp / "corrupt", corrupt=True), ["cannot be read", "dataset.root"]),
    ],
    ids=["missing", "empty", "corrupt"],
)
def test_data_root_without_a_dataset(in_tmp, make_root, named):
    root = make_root(in_tmp)
    result, _ = run_bench(in_tmp, SUITE.replace(DATASET, f"  name: mnist\n  root: {root}\n"))
    assert_user_error(result, str(root), *named)
    assert_store_untouched(in_tmp)


def test_data_root_option_that_does_not_exist(in_tmp):
    text = SUITE.replace(DATASET, "  name: mnist\n")
    result, _ = run_bench(in_tmp, text, "--data-root", str(in_tmp / "nowhere"))
    assert_user_error(result, "--data-root", "does not exist")
    assert_store_untouched(in_tmp)


def test_checkpoint_folder_that_cannot_be_written(in_tmp):
    blocker = in_tmp / "a-file"
    blocker.write_text("a file, not a folder: nothing can be created under it, even by root")
    result, _ = run_bench(in_tmp, SUITE, "--checkpoint-dir", str(blocker / "checkpoints"))
    assert_user_error(result, "--checkpoint-dir", str(blocker / "checkpoints"))
    assert_store_untouched(in_tmp)


def test_tracking_store_that_cannot_be_written(in_tmp):
    blocker = in_tmp / "a-file"
    blocker.write_text("a file, not a folder")
    store = f"sqlite:///{blocker / 'sub' / 'store.db'}"
    result, _ = run_bench(in_tmp, SUITE, "--tracking-uri", store, "--checkpoint-dir", "ck")
    assert_user_error(result, f"tracking store {store}", "--tracking-uri")
    assert_store_untouched(in_tmp)


def test_unknown_device(in_tmp):
    result, _ = run_bench(in_tmp, SUITE, "--device", "tpu")
    assert_user_error(result, "--device 'tpu'", "cuda:N")
    assert_store_untouched(in_tmp)


def test_missing_inception_weights(in_tmp):
    text = SUITE.replace(
        "[domain]", f"[domain, inception]\n  inception_weights: {in_tmp / 'no.pth'}"
    )
    result, _ = run_bench(in_tmp, text)
    assert_user_error(result, "evaluation.inception_weights", str(in_tmp / "no.pth"))
    assert_store_untouched(in_tmp)


def test_suite_file_missing_or_not_text(in_tmp):
    result = CliRunner().invoke(main, ["run", str(in_tmp / "nope.yaml")])
    assert_user_error(result, "nope.yaml", "cannot read suite file")
    binary = in_tmp / "binary.yaml"
    binary.write_bytes(b"\xff\xfe\x00garbage")
    result = CliRunner().invoke(main, ["run", str(binary)])
    assert_user_error(result, "binary.yaml", "not a text file")
    assert_store_untouched(in_tmp)


def test_real_processes_print_one_line_without_traceback(tmp_path):
    """The honest check, in real processes: stderr holds exactly the one error line. Three bad
    inputs at once (they only start up and fail): malformed YAML, a data root that does not
    exist, a tracking server that does not answer (must fail fast, not after MLflow's retries)."""
    bench = [sys.executable, "-c", "from bench.cli import main; main()", "run"]
    (tmp_path / "malformed.yaml").write_text(SUITE.replace("seeds: [0]", "seeds: [0"))
    (tmp_path / "no-data.yaml").write_text(
        SUITE.replace(DATASET, f"  name: mnist\n  root: {tmp_path / 'nowhere'}\n")
    )
    (tmp_path / "suite.yaml").write_text(SUITE)
    cases = {
        "malformed YAML": (["malformed.yaml"], "malformed YAML"),
        "missing data": (["no-data.yaml"], "dataset.root"),
        # port 9 (discard) is closed on test machines: the connection is refused at once
        "unreachable store": (["suite.yaml", "--tracking-uri", "http://127.0.0.1:9"], "no server"),
    }
    processes = {
        case: subprocess.Popen(
            [*bench, *args], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for case, (args, _) in cases.items()
    }
    for case, process in processes.items():
        out, err = process.communicate(timeout=120)
        assert process.returncode == 2, (case, out, err)
        lines = [line for line in err.splitlines() if " INFO " not in line]  # MLflow's own log
        assert len(lines) == 1 and lines[0].startswith("error: "), (case, err)
        assert cases[case][1] in lines[0], (case, lines[0])
        assert "Traceback" not in out + err, case
    assert_store_untouched(tmp_path)
