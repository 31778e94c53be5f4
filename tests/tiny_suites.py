"""The tiny synthetic suites the tests run, from one text: each test module names only what its
suite changes. Tests edit these texts by replacing lines (`text.replace("steps: 4", ...)`), so the
lines below are a contract: change one and grep the tests for it."""

from __future__ import annotations

VAE = "  - label: vae\n    model: vae\n"
DCGANS = "  - label: dcgan-{loss}\n    model: dcgan\n    grid:\n      loss: [bce, wgan-gp]\n"
VAEGANS = """\
  - label: vaegan-{recon}-{adversarial}
    model: vaegan
    grid:
      recon: [pixel, disfeat]
      adversarial: [bce, wgan-gp]
"""
SEVEN_VARIANTS = VAE + DCGANS + VAEGANS
SEVEN_LABELS = [  # their labels, in the order the grid expands them
    "vae",
    "dcgan-bce",
    "dcgan-wgan-gp",
    "vaegan-pixel-bce",
    "vaegan-pixel-wgan-gp",
    "vaegan-disfeat-bce",
    "vaegan-disfeat-wgan-gp",
]
# a few short interpolation strips, for the tests that read or render them
INTERPOLATION = "  interp_pairs: 2\n  interp_steps: 4\n  interp_strips: 2\n"


def tiny_suite(
    name: str,
    models: str = SEVEN_VARIANTS,
    *,
    top: str = "",
    train_limit: int = 64,
    length: str = "steps: 4",
    budget: str = "",
    log_every: int = 2,
    seeds: str = "[0]",
    evaluation: str = "",
    sections: str = "",
) -> str:
    """A suite of a few steps of width-8 networks on 64 (or `train_limit`) synthetic images,
    scored on 32 samples in the domain classifier's features only (Inception features run at ~8
    images/s on 2 CPU cores: test_fidelity.py tests them on their own).

    `top`: lines after the name; `length`: the budget's steps or epochs line; `budget` and
    `evaluation`: lines added to those sections; `sections`: whole sections before `models:`.
    """
    return (
        f"name: {name}\n{top}"
        "dataset:\n"
        "  name: synthetic\n"
        f"  train_limit: {train_limit}\n"
        "  eval_limit: 32\n"
        "budget:\n"
        f"  {length}\n"
        "  batch_size: 16\n"
        "  latent_dim: 8\n"
        "  width: 8\n"
        f"{budget}"
        f"  log_every: {log_every}\n"
        f"seeds: {seeds}\n"
        "evaluation:\n"
        "  num_samples: 32\n"
        "  batch_size: 16\n"
        "  calibration_samples: 64\n"
        "  grid_size: 16\n"
        "  feature_extractors: [domain]\n"
        f"{evaluation}{sections}"
        f"models:\n{models}"
    )
