"""What differs between machines: bf16 only where it is native (a stand-in CPU without AMX and
AVX-512 BF16 replaces the real detection, whatever CPU runs the tests), channels_last resolved per
device and recorded in the run, and the machine named beside every figure."""

from __future__ import annotations

import pytest
import torch
from click.testing import CliRunner
from mlflow.tracking import MlflowClient

from bench import keys
from bench.cli import main
from bench.run import hardware
from bench.suite.expand import expand
from bench.suite.load import load_suite
from bench.suite.schema import ComputeConfig, SuiteError
from bench.tracking import provenance
from tests.conftest import TINY_SUITE

ONE_VAE = TINY_SUITE.split("models:")[0] + "models:\n  - label: vae\n    model: vae\n"


@pytest.fixture
def cpu_without_bf16(monkeypatch):
    """The detection torch's kernels use, answering as an AMD EPYC without AVX-512 does."""
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: False)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: False)


@pytest.fixture
def cpu_with_amx(monkeypatch):
    monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: True)
    monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: True)


def test_bf16_native_follows_torchs_detection(cpu_without_bf16):
    cpu = torch.device("cpu")
    assert not provenance.bf16_native(cpu)
    name = provenance.device_name(cpu)
    assert provenance.cpu_model() in name and "bf16 native: no" in name


def test_amx_or_avx512_bf16_is_native(cpu_with_amx):
    assert provenance.bf16_native(torch.device("cpu"))
    assert "bf16 native: yes: AMX, AVX-512 BF16" in provenance.device_name(torch.device("cpu"))
    hardware.check_bf16("bf16", torch.device("cpu"))  # nothing to refuse


def test_a_bf16_suite_on_a_cpu_without_native_bf16_stops_in_one_line_before_training(
    cpu_without_bf16, write_suite, tracking_uri
):
    path = write_suite(ONE_VAE)
    result = CliRunner().invoke(
        main, ["run", str(path), "--precision", "bf16", "--tracking-uri", tracking_uri]
    )
    assert result.exit_code == 2, result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: compute.precision: bf16 on ")
    assert "--precision fp32" in lines[0] and hardware.BF16_FLAG in lines[0]
    assert MlflowClient(tracking_uri).get_experiment_by_name("tiny") is None  # nothing written


def test_the_dry_run_names_the_machine_and_warns_of_emulated_bf16(cpu_without_bf16, write_suite):
    path = write_suite(ONE_VAE)
    result = CliRunner().invoke(main, ["run", str(path), "--dry-run", "--precision", "bf16"])
    assert result.exit_code == 0, result.output
    assert f"device: cpu ({provenance.cpu_model()}" in result.output
    assert "bf16 native: no" in result.output
    assert "estimated training time (bf16, channels_last)" in result.output
    assert "warning: bf16 is not native on this device" in result.output


def test_insisting_on_emulated_bf16_is_allowed(cpu_without_bf16):
    with pytest.raises(SuiteError, match="--precision fp32"):
        hardware.check_bf16("bf16", torch.device("cpu"))
    hardware.check_bf16("bf16", torch.device("cpu"), allow=True)
    hardware.check_bf16("fp32", torch.device("cpu"))


def test_channels_last_auto_is_on_for_cpus_only():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    assert hardware.channels_last_for("auto", cpu) and not hardware.channels_last_for("auto", cuda)
    assert not hardware.channels_last_for(False, cpu) and hardware.channels_last_for(True, cuda)
    assert ComputeConfig().channels_last == "auto"


def test_auto_and_false_keep_the_ids_cells_had_and_true_keeps_its_own(write_suite):
    suite = load_suite(write_suite())

    def ids(**compute) -> list[str]:
        changed = suite.model_copy(update={"compute": ComputeConfig(**compute)})
        return [cell.id for cell in expand(changed)]

    auto = ids()
    assert "compute" not in expand(suite)[0].config()
    assert ids(channels_last=False) == auto
    assert set(ids(channels_last=True)).isdisjoint(auto)
    bf16 = ids(precision="bf16")
    assert ids(precision="bf16", channels_last="auto") == bf16
    assert set(ids(precision="bf16", channels_last=True)).isdisjoint(bf16)


def test_a_cpu_run_records_the_memory_format_it_trained_in(write_suite, tracking_uri):
    path = write_suite(ONE_VAE.replace("steps: 4", "steps: 2"))
    args = ["run", str(path), "--tracking-uri", tracking_uri, "--no-progress"]
    assert CliRunner().invoke(main, args).exit_code == 0
    off = CliRunner().invoke(main, [*args, "--set", "compute.channels_last=false"])
    assert off.exit_code == 0 and "skipped" in off.output  # the same cell: found finished
    client = MlflowClient(tracking_uri)
    (run,) = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    assert run.data.tags[keys.TAG_MEMORY_FORMAT] == "channels_last"
    assert "bf16 native" in run.data.tags[keys.TAG_DEVICE]


def test_channels_last_takes_true_false_or_auto_and_says_so(write_suite):
    path = write_suite(ONE_VAE)
    result = CliRunner().invoke(
        main, ["validate", str(path), "--set", "compute.channels_last=banana"]
    )
    assert result.exit_code == 2
    assert "compute.channels_last': expected true, false or auto" in result.output
