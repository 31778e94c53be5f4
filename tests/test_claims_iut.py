"""Claims as intersection-union tests (issue #35): every (better, worse) pair must agree, a claim
may state its own direction, and a seed without a value counts as a failed seed."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from click.testing import CliRunner

from bench import keys
from bench.cli import main
from bench.report.claims import (
    CONTRADICTED,
    HOLDS,
    MIXED,
    UNDECIDED,
    claim_rows,
    evaluate_claims,
)
from bench.suite.schema import ClaimConfig
from tests.conftest import TINY_SUITE

FID = keys.fid_key("domain")
ROOT = Path(__file__).parents[1]


def frame(key: str, values: dict[str, list[float | None]]) -> pd.DataFrame:
    """One finished row per (variant, seed); None: a finished seed that logged no value."""
    rows = [
        {"label": label, "seed": seed, "status": keys.STATUS_FINISHED, key: value}
        for label, seeds in values.items()
        for seed, value in enumerate(seeds)
    ]
    return pd.DataFrame(rows)


def claim(better, worse, metric=FID, direction=None) -> ClaimConfig:
    return ClaimConfig(
        name="x", metric=metric, better=better, worse=worse, source="t", direction=direction
    )


def around(mean: float, n: int = 10, seed: int = 0) -> list[float]:
    return list(mean + np.random.default_rng(seed).normal(0, 4.0, n))


def test_a_strong_variant_does_not_carry_a_weak_one():
    """gan-b is worse than the VAE on every seed: pooled with gan-a, "GANs beat VAEs" held."""
    cells = frame(
        FID, {"gan-a": around(169), "gan-b": around(245, seed=1), "vae": around(231, seed=2)}
    )
    (result,) = evaluate_claims(cells, [claim(["gan-a", "gan-b"], ["vae"])])
    assert result.verdict == MIXED
    assert "gan-b vs vae: significant the other way" in result.why
    assert "gan-a vs vae" not in result.why  # only the pair that disagrees is named
    (row,) = claim_rows([result])
    assert row["better_mean"].startswith("gan-a: 16") and "; gan-b: 24" in row["better_mean"]
    assert "(gan-a vs vae)" in row["p"] or "(gan-b vs vae)" in row["p"]  # the largest pair's p


def test_every_pair_significant_the_other_way_contradicts():
    cells = frame(FID, {"a": around(250), "b": around(260, seed=1), "vae": around(200, seed=2)})
    (result,) = evaluate_claims(cells, [claim(["a", "b"], ["vae"])])
    assert result.verdict == CONTRADICTED and result.why == ""


def test_the_claims_largest_pairwise_p_enters_holm():
    cells = frame(
        FID,
        {"a": around(100), "b": around(112, seed=1), "c": around(130, seed=2), "d": around(300)},
    )
    first, second = evaluate_claims(cells, [claim(["a", "b"], ["c"]), claim(["a"], ["d"])])
    assert first.p_value == max(p.p_value for p in first.pairs)
    assert first.adjusted_p == pytest.approx(min(1.0, first.p_value * 1))  # the larger of two
    assert second.adjusted_p == pytest.approx(2 * second.p_value)
    assert first.verdict == HOLDS and second.verdict == HOLDS


SHARPNESS = keys.SHARPNESS_SAMPLES


def test_blurrier_is_lower_sharpness_not_farther_from_one():
    """VAE 0.70, GAN 1.40: the GAN is 0.4 from the data's 1, the VAE 0.3, yet the VAE is the
    blurrier one, which is what the claim says."""
    cells = frame(
        SHARPNESS,
        {"gan": [1.38, 1.40, 1.42, 1.41], "vae": [0.69, 0.70, 0.71, 0.70]},
    )
    raw, table = evaluate_claims(
        cells,
        [claim(["gan"], ["vae"], SHARPNESS, "higher"), claim(["gan"], ["vae"], SHARPNESS)],
    )
    assert raw.verdict == HOLDS
    assert table.verdict == CONTRADICTED  # the table's "closest to 1": a different claim
    (row, _) = claim_rows([raw, table])
    assert "higher is better" in row["metric"]


def test_the_shipped_sharpness_claims_use_the_raw_value():
    for path in sorted((ROOT / "suites").glob("*.yaml")):
        for entry in yaml.safe_load(path.read_text()).get("claims", []):
            if entry["metric"].startswith("sharpness"):
                assert entry.get("direction") == "higher", (path.name, entry["name"])


def test_closer_to_target_needs_a_metric_with_a_target(write_suite):
    text = (
        "[{name: c, metric: fid_domain, better: [vae], worse: [dcgan-bce], source: s, "
        "direction: closer_to_target}]"
    )
    result = CliRunner().invoke(
        main, ["validate", str(write_suite(TINY_SUITE + f"claims: {text}\n"))]
    )
    assert result.exit_code == 2
    assert "direction closer_to_target needs a metric with a target" in result.output


def test_a_seed_without_a_value_is_a_failed_seed():
    """gan logged no FID on one finished seed: dropping it would judge gan on its survivors."""
    cells = frame(FID, {"gan": [10.0, 11.0, None, 10.5], "vae": [30.0, 31.0, 29.5, 30.5]})
    holds, contradicted = evaluate_claims(cells, [claim(["gan"], ["vae"]), claim(["vae"], ["gan"])])
    assert holds.adjusted_p < 0.05 and holds.verdict == UNDECIDED
    assert holds.failed_better == 1 and "1 without a value" in holds.why
    assert contradicted.verdict == UNDECIDED  # gan, the winner, lost a seed
    assert "1 finished without a value" in claim_rows([holds])[0]["failed"]
    complete = cells[cells[FID].notna()]
    assert evaluate_claims(complete, [claim(["gan"], ["vae"])])[0].verdict == HOLDS


def test_a_seed_without_a_value_blocks_the_star():
    """The headline tests count it as they count a failed seed, and say so."""
    from bench.metrics.table import metric_specs
    from bench.report.stats import significance, summarize
    from bench.report.tables import describe

    fid = next(m for m in metric_specs() if m.key == FID)
    cells = frame(FID, {"gan": [10.0, 10.1, None], "vae": [20.0, 20.5, 19.8]})
    comparison = significance(cells, [fid], ["gan", "vae"]).comparison(FID)
    assert comparison.best == "gan" and comparison.best_failed == 1
    assert comparison.winner is None
    text = describe(comparison, summarize(cells, [fid], ["gan", "vae"]))
    assert "(1 of them finished without a value)" in text["verdict"]
    assert "1 of them finished without a value" in text["lead"]
