"""The opt-in speed switches (suite `compute:` section, `bench run --precision/--compile`): each
keeps the losses of a few training steps within a stated tolerance of the fp32 eager path.

Tolerances, on |loss - fp32 eager loss| / max(1, |fp32 eager loss|) over 6 steps from the same
initial weights and batches:
- bf16 autocast: 0.15. bfloat16 keeps 8 bits of mantissa (relative rounding 2^-8 = 0.4 %) in every
  convolution, and a GAN's losses amplify such differences step by step; measured worst case on
  this machine: 0.07 (VAE-GAN, Dis_l reconstruction, BCE). The test also checks that the bf16 path
  does differ, i.e. that autocast really ran.
- torch.compile: 1e-3 (the same float32 arithmetic, fused and reordered, whose rounding
  differences GAN training amplifies; measured up to 1.1e-4 (dcgan-bce) with a cold compile cache).
- channels_last: 1e-3, as compile's: the same float32 arithmetic in other kernels (NHWC), alone;
  with bf16 autocast, bf16's 0.15. The test also checks that every convolution's weight is NHWC.
"""

from __future__ import annotations

import re

import pytest
import torch
from click.testing import CliRunner

import models
from bench.cli import main
from bench.run.train import MEMORY_FORMATS, autocast, train
from bench.suite.expand import expand
from bench.suite.load import load_suite
from bench.suite.schema import ComputeConfig
from tests.device import chosen_device

DEVICE = chosen_device()  # the tests marked `device` run there (pytest --device)
BF16_TOLERANCE = 0.15
COMPILE_TOLERANCE = 1e-3
CHANNELS_LAST_TOLERANCE = 1e-3  # float32 in another memory order: as compile's
STEPS = 6

VARIANTS = {
    "vae": ("vae", {}),
    "dcgan-bce": ("dcgan", {"loss": "bce"}),
    "dcgan-wgan-gp": ("dcgan", {"loss": "wgan-gp"}),
    "vaegan-disfeat-bce": ("vaegan", {"recon": "disfeat", "adversarial": "bce"}),
    "vaegan-pixel-wgan-gp": ("vaegan", {"recon": "pixel", "adversarial": "wgan-gp"}),
    "vaegan-disfeat-wgan-gp": ("vaegan", {"recon": "disfeat", "adversarial": "wgan-gp"}),
    "vaegan-disfeat-bce-simultaneous": ("vaegan", {"recon": "disfeat", "update": "simultaneous"}),
}


def step_losses(
    variant: str,
    precision: str = "fp32",
    compiled: bool = False,
    channels_last: bool = False,
    width: int = 8,
) -> list[dict]:
    """Losses of every step of a tiny model trained from seed 0 on fixed random images."""
    name, options = VARIANTS[variant]
    images = torch.rand(128, 1, 28, 28, generator=torch.Generator().manual_seed(1)) * 2 - 1
    images = images.to(DEVICE)
    hparams = models.Hparams(
        latent_dim=width, width=width, lr_g=2e-4, lr_d=2e-4, betas=(0.5, 0.999), n_critic=2
    )
    torch.manual_seed(0)
    model = models.build(name, options, (1, 28, 28), hparams, DEVICE)
    if channels_last:
        model.to_channels_last()
    if compiled:
        model.compile_networks()
    logged: list[dict] = []
    train(
        model,
        images,
        32,
        STEPS,
        seed=0,
        log_every=1,
        log_losses=lambda step, means: logged.append(means),
        progress=False,
        precision=precision,
        memory_format=MEMORY_FORMATS[channels_last],
    )
    if channels_last:  # the switch really ran: every conv weight is NHWC after training
        convolutions = [m for m in model.modules() if isinstance(m, torch.nn.modules.conv._ConvNd)]
        assert convolutions and all(
            m.weight.is_contiguous(memory_format=torch.channels_last) for m in convolutions
        )
    return logged


def worst_difference(reference: list[dict], other: list[dict]) -> float:
    assert len(reference) == len(other) == STEPS
    worst = 0.0
    for ref, got in zip(reference, other, strict=True):
        assert ref.keys() == got.keys()
        for name in ref:
            worst = max(worst, abs(got[name] - ref[name]) / max(1.0, abs(ref[name])))
    return worst


@pytest.mark.device
@pytest.mark.parametrize("variant", list(VARIANTS))
def test_bf16_autocast_stays_within_tolerance_of_fp32(variant):
    reference = step_losses(variant)
    difference = worst_difference(reference, step_losses(variant, precision="bf16"))
    assert 0 < difference <= BF16_TOLERANCE, difference


@pytest.mark.device
@pytest.mark.parametrize(
    "variant",
    [
        # one variant in the default run: it compiles all three networks and Dis_l
        "vaegan-disfeat-bce",
        *(pytest.param(v, marks=pytest.mark.slow) for v in VARIANTS if v != "vaegan-disfeat-bce"),
    ],
)
def test_compiled_networks_match_eager(variant):
    reference = step_losses(variant)
    assert worst_difference(reference, step_losses(variant, compiled=True)) <= COMPILE_TOLERANCE


@pytest.mark.device
@pytest.mark.parametrize(
    "variant",
    [  # one variant in the default run (all three networks), the others with -m slow
        "vaegan-disfeat-bce",
        *(pytest.param(v, marks=pytest.mark.slow) for v in VARIANTS if v != "vaegan-disfeat-bce"),
    ],
)
def test_channels_last_stays_within_tolerance_of_fp32_alone_and_with_bf16(variant):
    reference = step_losses(variant)
    alone = worst_difference(reference, step_losses(variant, channels_last=True))
    assert alone <= CHANNELS_LAST_TOLERANCE, alone
    both = step_losses(variant, precision="bf16", channels_last=True)
    assert worst_difference(reference, both) <= BF16_TOLERANCE


def test_bf16_steps_see_the_weights_updated_earlier_in_the_same_step():
    """autocast caches its bf16 copies of weights for the life of its context; a train step
    updates the discriminator and then runs it again for the generator's turn, so the train
    loop's autocast must not cache (with the cache the generator trained against the old one)."""
    layer = torch.nn.Linear(4, 1)
    x = torch.ones(2, 4)
    with autocast(torch.device("cpu"), "bf16"):
        before = layer(x)
        with torch.no_grad():
            layer.weight.add_(1.0)
        after = layer(x)
    assert torch.allclose(after.float(), before.float() + 4, atol=0.1)


@pytest.mark.device
@pytest.mark.parametrize("variant", ["dcgan-bce", "vaegan-disfeat-bce"])
def test_bf16_follows_fp32_at_the_fashion_suites_width(variant):
    """Width 64 (fashion_ablation's): with the cached, stale discriminator the first generator
    losses under bf16 were 0.55 (DCGAN) and 0.78 (VAE-GAN) away from fp32's; without it 0.006 and
    0.008, the size of the fp32 run's own spread from bf16-rounded initial weights."""
    reference = step_losses(variant, width=64)
    assert worst_difference(reference, step_losses(variant, "bf16", width=64)) <= 0.05


def test_compile_keeps_state_dict_names_and_evaluation_eager():
    name, options = VARIANTS["vaegan-disfeat-wgan-gp"]
    hparams = models.Hparams(8, 8, 2e-4, 2e-4, (0.5, 0.999), 2)
    torch.manual_seed(0)
    model = models.build(name, options, (1, 28, 28), hparams, "cpu")
    names = list(model.state_dict())
    x = torch.rand(4, 1, 28, 28) * 2 - 1
    eager = model.decode(model.encode(x))
    model.compile_networks()
    assert list(model.state_dict()) == names  # checkpoints load into eager models and back
    assert torch.equal(model.decode(model.encode(x)), eager)  # evaluation runs the eager code


def test_compute_section_is_part_of_the_cell_id_only_when_not_default(write_suite):
    base = load_suite(write_suite())
    plain = {cell.id for cell in expand(base)}
    assert "compute" not in expand(base)[0].config()  # ids from before the switches still match
    bf16 = base.model_copy(update={"compute": ComputeConfig(precision="bf16")})
    compiled = base.model_copy(update={"compute": ComputeConfig(compile=True)})
    assert expand(bf16)[0].config()["compute"] == {
        "precision": "bf16",
        "compile": False,
        "bf16_revision": 2,  # the stale-discriminator fix: bf16 cells from before are not reused
    }
    assert plain.isdisjoint({cell.id for cell in expand(bf16)})
    assert plain.isdisjoint({cell.id for cell in expand(compiled)})
    nhwc = base.model_copy(update={"compute": ComputeConfig(channels_last=True)})
    assert expand(nhwc)[0].config()["compute"]["channels_last"] is True
    assert plain.isdisjoint({cell.id for cell in expand(nhwc)})


def test_cli_switches_override_the_suite(write_suite):
    path = write_suite()
    default = CliRunner().invoke(main, ["run", str(path), "--dry-run"])
    bf16 = CliRunner().invoke(main, ["run", str(path), "--dry-run", "--precision", "bf16"])
    assert default.exit_code == bf16.exit_code == 0

    def cell_ids(output: str) -> set[str]:  # the listed cells (the estimate follows them)
        return {m.group(1) for m in re.finditer(r"^  ([0-9a-f]{16})  ", output, re.MULTILINE)}

    ids, bf16_ids = cell_ids(default.output), cell_ids(bf16.output)
    assert len(ids) == len(bf16_ids) == 7 and ids.isdisjoint(bf16_ids)
    bad = CliRunner().invoke(main, ["run", str(path), "--precision", "fp8"])
    assert bad.exit_code == 2 and "fp8" in bad.output


def test_unknown_compute_field_is_a_clear_error(write_suite):
    path = write_suite(
        "name: x\ndataset: {name: synthetic}\nbudget: {steps: 1}\nseeds: [0]\n"
        "compute: {precison: bf16}\nmodels: [{label: vae, model: vae}]\n"
    )
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2
    assert "compute.precison" in result.output and "did you mean 'precision'" in result.output
