"""Suite parsing: defaults, grid expansion, stable cell ids, one-line errors naming the field."""

from __future__ import annotations

import pytest

from bench.suite.expand import expand
from bench.suite.load import load_suite
from bench.suite.schema import SuiteError
from tests.conftest import TINY_SUITE
from tests.tiny_suites import SEVEN_LABELS


def test_grid_expands_to_seven_variants_with_labels(write_suite):
    suite = load_suite(write_suite())
    cells = expand(suite)
    assert [c.variant.label for c in cells] == SEVEN_LABELS
    vaegan = cells[-1].variant
    assert vaegan.model == "vaegan"
    assert vaegan.options["recon"] == "disfeat"
    assert vaegan.options["adversarial"] == "wgan-gp"
    # defaults of the model's options are resolved into the cell
    assert vaegan.options["gp_lambda"] == 10.0
    assert vaegan.options["dis_layer"] == 3


def test_defaults_are_filled(write_suite):
    suite = load_suite(write_suite(TINY_SUITE.replace("  feature_extractors: [domain]\n", "")))
    assert suite.dataset.train_split == "train" and suite.dataset.eval_split == "test"
    assert suite.budget.betas == (0.5, 0.999)
    assert suite.budget.lr_g == 2e-4
    assert suite.evaluation.feature_extractors == ["domain", "inception"]


def test_seeds_multiply_cells(write_suite):
    suite = load_suite(write_suite(TINY_SUITE.replace("seeds: [0]", "seeds: [0, 1, 2]")))
    cells = expand(suite)
    assert len(cells) == 21
    assert [c.seed for c in cells[:3]] == [0, 1, 2]
    assert len({c.id for c in cells}) == 21


def test_cell_ids_are_stable_across_loads(write_suite):
    first = [c.id for c in expand(load_suite(write_suite()))]
    second = [c.id for c in expand(load_suite(write_suite(name="again.yaml")))]
    assert first == second


def test_writing_a_default_explicitly_keeps_the_id(write_suite):
    plain = expand(load_suite(write_suite()))[0]
    explicit = TINY_SUITE.replace(
        "    model: vae\n", "    model: vae\n    options: {kl_weight: 1.0}\n", 1
    )
    assert expand(load_suite(write_suite(explicit, "explicit.yaml")))[0].id == plain.id


@pytest.mark.parametrize(
    "old, new",
    [
        ("steps: 4", "steps: 5"),
        ("batch_size: 16", "batch_size: 8"),
        ("latent_dim: 8", "latent_dim: 9"),
        ("seeds: [0]", "seeds: [1]"),
        ("train_limit: 64", "train_limit: 63"),
        ("name: synthetic", "name: synthetic-rgb"),
        ("num_samples: 32", "num_samples: 31"),
        ("    model: vae\n", "    model: vae\n    options: {kl_weight: 0.5}\n"),
    ],
)
def test_cell_id_changes_with_any_resolved_field(write_suite, old, new):
    assert old in TINY_SUITE
    base = expand(load_suite(write_suite()))[0].id
    changed = expand(load_suite(write_suite(TINY_SUITE.replace(old, new, 1), "changed.yaml")))[0]
    assert changed.id != base


def test_label_and_data_root_do_not_change_the_id(write_suite):
    base = expand(load_suite(write_suite()))[0].id
    relabelled = TINY_SUITE.replace("label: vae", "label: plain-vae")
    assert expand(load_suite(write_suite(relabelled, "b.yaml")))[0].id == base
    rooted = TINY_SUITE.replace("  name: synthetic\n", "  name: synthetic\n  root: /somewhere\n")
    assert expand(load_suite(write_suite(rooted, "c.yaml")))[0].id == base


@pytest.mark.parametrize(
    "old, new, expected",
    [
        ("steps: 4", "stepz: 4", "budget.stepz"),
        ("steps: 4", "steps: 0", "budget.steps"),
        ("steps: 4", "steps: four", "budget.steps"),
        ("steps: 4", "epochs: 1\n  steps: 4", "exactly one of 'epochs' or 'steps'"),
        ("name: synthetic", "name: imagenet", "dataset.name"),
        ("loss: [bce, wgan-gp]", "loss: [bce, hinge]", "'loss'"),
        ("model: vae", "model: vea", "unknown model 'vea'"),
        ("    model: vae\n", "    model: vae\n    options: {klweight: 2}\n", "unknown option"),
        ("label: vae", "label: dcgan-bce", "duplicate variant label 'dcgan-bce'"),
        ("label: vae", "label: ../../etc", "label"),
        ("seeds: [0]", "seeds: []", "seeds"),
        ("batch_size: 16", "batch_size: -1", "budget.batch_size"),
    ],
)
def test_bad_fields_are_named(write_suite, old, new, expected):
    path = write_suite(TINY_SUITE.replace(old, new, 1))
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    message = str(err.value)
    assert str(path) in message
    assert expected in message
    assert "\n" not in message


def test_empty_model_list_is_an_error(write_suite):
    text = TINY_SUITE[: TINY_SUITE.index("models:")] + "models: []\n"
    with pytest.raises(SuiteError, match="models"):
        load_suite(write_suite(text))


def test_malformed_yaml_names_the_line(write_suite):
    path = write_suite("name: x\ndataset: {name: synthetic\nbudget: [\n")
    with pytest.raises(SuiteError, match=r"line \d+.*malformed YAML"):
        load_suite(path)


def test_missing_file(tmp_path):
    with pytest.raises(SuiteError, match="cannot read suite file"):
        load_suite(tmp_path / "nope.yaml")


def test_label_placeholder_must_be_a_grid_option(write_suite):
    path = write_suite(TINY_SUITE.replace("dcgan-{loss}", "dcgan-{adversarial}"))
    with pytest.raises(SuiteError, match="placeholder"):
        load_suite(path)


# --- per-variant optimizer settings, budget parity, held-out evaluation ---------------------------

PAPER_SETTINGS = TINY_SUITE.replace(
    "  - label: dcgan-{loss}\n    model: dcgan\n    grid:\n      loss: [bce, wgan-gp]\n",
    "  - label: dcgan-bce\n    model: dcgan\n    options: {loss: bce}\n"
    "  - label: dcgan-wgan-gp\n    model: dcgan\n    options: {loss: wgan-gp}\n"
    "    optimizer: {lr_g: 1.0e-4, lr_d: 1.0e-4, betas: [0.0, 0.9], n_critic: 5}\n",
)


def by_label(cells):
    return {c.variant.label: c for c in cells}


def test_a_model_entry_overrides_the_budgets_optimizer(write_suite):
    cells = by_label(expand(load_suite(write_suite(PAPER_SETTINGS))))
    wgan, bce, vae = cells["dcgan-wgan-gp"], cells["dcgan-bce"], cells["vae"]
    assert wgan.variant.optimizer == {
        "lr_g": 1e-4,
        "lr_d": 1e-4,
        "betas": [0.0, 0.9],
        "n_critic": 5,
    }
    # the budget's defaults elsewhere; n_critic only where the loss has critic steps, lr_d only
    # where there is a discriminator
    assert bce.variant.optimizer == {
        "lr_g": 2e-4,
        "lr_d": 2e-4,
        "betas": [0.5, 0.999],
        "n_critic": 1,
    }
    assert vae.variant.optimizer == {"lr_g": 2e-4, "betas": [0.5, 0.999], "n_critic": 1}
    assert wgan.config()["optimizer"] == wgan.variant.optimizer
    assert "lr_g" not in wgan.config()["budget"]  # the variant's own values, not the defaults
    hparams = wgan.hparams()
    assert (hparams.lr_g, hparams.lr_d, hparams.betas, hparams.n_critic) == (
        1e-4,
        1e-4,
        (0.0, 0.9),
        5,
    )


def test_resolved_optimizer_reaches_the_models_adam(write_suite):
    import models

    cell = by_label(expand(load_suite(write_suite(PAPER_SETTINGS))))["dcgan-wgan-gp"]
    model = models.build(cell.variant.model, cell.variant.options, (1, 28, 28), cell.hparams())
    for optimizer in model.optimizers.values():
        (group,) = optimizer.param_groups
        assert group["lr"] == 1e-4 and tuple(group["betas"]) == (0.0, 0.9)
    assert model.n_critic == 5


def test_optimizer_settings_are_part_of_the_cell_id(write_suite):
    plain = by_label(expand(load_suite(write_suite())))
    tuned = by_label(expand(load_suite(write_suite(PAPER_SETTINGS, "tuned.yaml"))))
    assert tuned["dcgan-wgan-gp"].id != plain["dcgan-wgan-gp"].id
    assert tuned["dcgan-bce"].id == plain["dcgan-bce"].id  # unchanged settings, same cell
    # a budget n_critic the BCE variants never read does not split their cells
    other = write_suite(TINY_SUITE.replace("n_critic: 2", "n_critic: 3"), "critic.yaml")
    changed = by_label(expand(load_suite(other)))
    assert changed["dcgan-bce"].id == plain["dcgan-bce"].id
    assert changed["dcgan-wgan-gp"].id != plain["dcgan-wgan-gp"].id


def test_a_grid_may_range_over_optimizer_settings(write_suite):
    text = TINY_SUITE.replace(
        "  - label: vae\n    model: vae\n",
        "  - label: vae-lr{lr_g}\n    model: vae\n    grid: {lr_g: [1.0e-3, 1.0e-4]}\n",
    )
    cells = by_label(expand(load_suite(write_suite(text))))
    assert cells["vae-lr0.001"].variant.optimizer["lr_g"] == 1e-3
    assert cells["vae-lr0.0001"].variant.optimizer["lr_g"] == 1e-4
    assert cells["vae-lr0.001"].variant.options == cells["vae-lr0.0001"].variant.options
    assert cells["vae-lr0.001"].variant_id != cells["vae-lr0.0001"].variant_id


def test_seeds_of_a_variant_share_its_variant_id(write_suite):
    cells = expand(load_suite(write_suite(TINY_SUITE.replace("seeds: [0]", "seeds: [0, 1]"))))
    assert cells[0].variant_id == cells[1].variant_id and cells[0].id != cells[1].id
    assert len({c.variant_id for c in cells}) == 7


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ("    optimizer: {lr_g: 0}\n", "lr_g"),
        ("    optimizer: {betas: [0.5, 1.5]}\n", "betas"),
        ("    optimizer: {n_critc: 5}\n", "n_critc"),
        ("    grid: {n_critic: [0]}\n", "n_critic"),
    ],
)
def test_bad_optimizer_settings_name_the_field(write_suite, entry, field):
    text = TINY_SUITE.replace(
        "  - label: vae\n    model: vae\n", "  - label: vae\n    model: vae\n" + entry
    )
    with pytest.raises(SuiteError, match=field) as err:
        load_suite(write_suite(text))
    assert "\n" not in str(err.value)


def test_budget_parity_defaults_to_generator_updates(write_suite):
    suite = load_suite(write_suite())
    assert suite.budget.parity == "generator_updates"
    batches = load_suite(
        write_suite(TINY_SUITE.replace("  steps: 4\n", "  steps: 4\n  parity: batches\n"), "b.yaml")
    )
    assert batches.budget.parity == "batches"
    assert expand(batches)[0].id != expand(suite)[0].id
    with pytest.raises(SuiteError, match="budget.parity"):
        load_suite(
            write_suite(
                TINY_SUITE.replace("  steps: 4\n", "  steps: 4\n  parity: images\n"), "x.yaml"
            )
        )


def test_evaluating_on_the_training_split_is_an_error(write_suite):
    text = TINY_SUITE.replace("  name: synthetic\n", "  name: synthetic\n  eval_split: train\n")
    with pytest.raises(SuiteError, match="eval_split is the training split") as err:
        load_suite(write_suite(text))
    assert "suite.yaml" in str(err.value)
