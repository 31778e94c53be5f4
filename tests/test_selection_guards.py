"""Selection guards (issue #35): a search never chooses a trial that copies its training set,
and never selects by reconstruction while it searches an option that trades samples for it."""

from __future__ import annotations

import pytest
import yaml

from bench.suite.load import load_suite
from bench.suite.schema import SuiteError
from bench.suite.search import TrialResult, best_trial
from tests.test_search import VAE, write


def result(trial: int, value: float, copying: float | None) -> TrialResult:
    cell = type("C", (), {"trial": trial})()
    return TrialResult(cell, value, None, copying=copying)


def test_a_trial_that_copies_its_training_set_is_never_chosen():
    results = [result(0, 5.0, -4.2), result(1, 9.0, 0.5), result(2, 7.0, None)]
    assert best_trial(results, lower_is_better=True).cell.trial == 2
    assert best_trial([result(0, 5.0, -3.01)], lower_is_better=True) is None
    assert best_trial([result(0, 5.0, -2.99)], lower_is_better=True).cell.trial == 0


@pytest.mark.parametrize("name", ["gamma", "kl_weight"])
def test_recon_mse_is_refused_with_an_option_that_trades_samples_for_it(tmp_path, name):
    text = write(tmp_path, VAE + "  - label: vaegan\n    model: vaegan\n").read_text()
    raw = yaml.safe_load(text)
    raw["search"]["select"] = "recon_mse"
    raw["search"]["space"] = {name: {"loguniform": [1.0e-3, 1.0]}}
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SuiteError) as err:
        load_suite(path)
    assert f"recon_mse with {name} in search.space" in str(err.value)
    raw["search"]["space"] = {"lr_g": {"loguniform": [1.0e-4, 1.0e-2]}}
    path.write_text(yaml.safe_dump(raw))
    load_suite(path)  # recon_mse over the learning rate alone is a fair choice
