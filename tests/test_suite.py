"""Suite parsing: defaults, grid expansion, stable cell ids, one-line errors naming the field."""

from __future__ import annotations

import pytest

from bench.suite import SuiteError, expand, load_suite
from tests.conftest import TINY_SUITE


def test_grid_expands_to_seven_variants_with_labels(write_suite):
    suite = load_suite(write_suite())
    cells = expand(suite)
    assert [c.variant.label for c in cells] == [
        "vae",
        "dcgan-bce",
        "dcgan-wgan-gp",
        "vaegan-pixel-bce",
        "vaegan-pixel-wgan-gp",
        "vaegan-disfeat-bce",
        "vaegan-disfeat-wgan-gp",
    ]
    vaegan = cells[-1].variant
    assert vaegan.model == "vaegan"
    assert vaegan.options["recon"] == "disfeat"
    assert vaegan.options["adversarial"] == "wgan-gp"
    # defaults of the model's options are resolved into the cell
    assert vaegan.options["gp_lambda"] == 10.0
    assert vaegan.options["dis_layer"] == 3


def test_defaults_are_filled(write_suite):
    suite = load_suite(write_suite())
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
