"""A suite's `published:` values: checked by bench validate, and set beside the suite's own mean ±
CI in the report's Published results with every protocol difference named (on a tiny synthetic
run: two variants, two seeds, a few steps)."""

from __future__ import annotations

import pandas as pd
import pytest
from click.testing import CliRunner

from bench import keys
from bench.cli import main
from bench.report.published import agreement, declared_published, published_sections
from bench.suite.load import load_suite
from tests.conftest import TINY_SUITE

TWO_SEEDS = TINY_SUITE.replace("seeds: [0]", "seeds: [0, 1]")
TWO_VARIANTS = (
    TWO_SEEDS[: TWO_SEEDS.index("models:")]
    + """models:
  - label: vae
    model: vae
  - label: dcgan-bce
    model: dcgan
    options: {loss: bce}
"""
)
PUBLISHED = """
published:
  - metric: fid_domain
    source: Someone et al. 2099, Table 9
    values:
      dcgan-bce: {mean: 26.5, sd: 1.6}
      vae: {mean: 58.7}
    statistic: best of a search ± sd
    protocol: {samples: 10000, reference: test, reference_images: 10000}
    differences: ["networks: theirs InfoGAN-style; ours DCGAN-style"]
    note: recalled, not confirmed
"""


@pytest.mark.parametrize(
    "block, message",
    [
        (PUBLISHED.replace("fid_domain", "fid_domian"), "did you mean 'fid_domain'"),
        (PUBLISHED.replace("dcgan-bce: {mean", "dcgan-bc: {mean"), "did you mean 'dcgan-bce'"),
        (PUBLISHED.replace("sd: 1.6", "sd: -1"), "published.0.values.dcgan-bce.sd"),
        (PUBLISHED.replace("    note:", "    notes:"), "unknown field 'published.0.notes'"),
    ],
)
def test_bench_validate_checks_the_published_block(write_suite, block, message):
    result = CliRunner().invoke(main, ["validate", str(write_suite(TWO_VARIANTS + block))])
    assert result.exit_code == 2 and message in result.output


def test_declared_values_are_read_from_the_suite_text(write_suite):
    suite = load_suite(write_suite(TWO_VARIANTS + PUBLISHED))
    assert suite.published == declared_published(TWO_VARIANTS + PUBLISHED)
    assert suite.published[0].values["dcgan-bce"].sd == 1.6
    assert declared_published(TWO_VARIANTS) == []


def test_a_variant_without_finished_seeds_shows_a_dash_beside_their_value():
    cells = pd.DataFrame(
        [
            {"label": "vae", "seed": 0, "status": keys.STATUS_FINISHED, "run_id": None,
             keys.fid_key("domain"): 50.0},
            {"label": "vae", "seed": 1, "status": keys.STATUS_FINISHED, "run_id": None,
             keys.fid_key("domain"): 52.0},
            {"label": "dcgan-bce", "seed": 0, "status": keys.STATUS_FAILED, "run_id": None,
             keys.fid_key("domain"): None},
        ]
    )  # fmt: skip
    (section,) = published_sections(
        cells, ["vae", "dcgan-bce"], [], declared_published(TWO_VARIANTS + PUBLISHED)
    )
    rows = {row["label"]: row for row in section["rows"]}
    assert rows["vae"]["ours"] == "51 ± 13" and rows["vae"]["seeds"] == 2
    assert rows["dcgan-bce"]["ours"] == "–" and rows["dcgan-bce"]["theirs"] == "26.5 ± 1.6"
    # no runs to read the protocol from: said so, not guessed
    assert (
        "generated images per value: theirs 10000; ours not recorded by the runs"
        in (section["differences"])
    )


def test_the_report_sets_ours_beside_theirs_and_names_the_differences(
    write_suite, tracking_uri, tmp_path
):
    suite = write_suite(TWO_VARIANTS + PUBLISHED)
    ran = CliRunner().invoke(main, ["run", str(suite), "--tracking-uri", tracking_uri])
    assert ran.exit_code == 0, ran.output
    out = tmp_path / "report"
    made = CliRunner().invoke(
        main, ["report", str(suite), "--tracking-uri", tracking_uri, "--out", str(out)]
    )
    assert made.exit_code == 0, made.output
    text = (out / "report.md").read_text()
    section = text[text.index("## Published results") : text.index("## Summary")]
    assert "### FID" in section and "Someone et al. 2099, Table 9" in section
    assert "| dcgan-bce |" in section and "| 26.5 ± 1.6 |" in section and "| 58.7 |" in section
    for difference in (
        "generated images per value: theirs 10000; ours 32",
        "reference images: theirs 10000; ours 32",
        "networks: theirs InfoGAN-style; ours DCGAN-style",
    ):
        assert f"- {difference}" in section
    assert "reference split" not in section  # test on both sides: no difference to name
    assert "Note: recalled, not confirmed" in section
    assert "How ours compare (side by side, no test):" in section
    assert "- Ordering, best first: ours " in section
    html = (out / "report.html").read_text()
    assert 'id="published-results"' in html and "26.5 ± 1.6" in html


def test_the_section_says_whether_the_ordering_and_the_gaps_agree():
    theirs = {"dcgan-bce": 26.5, "dcgan-wgan-gp": 24.5, "vae": 58.7}
    same = agreement({"dcgan-bce": 40.0, "dcgan-wgan-gp": 35.0, "vae": 90.0}, theirs, True)
    assert (
        "Ordering, best first: ours dcgan-wgan-gp then dcgan-bce then vae; theirs "
        "dcgan-wgan-gp then dcgan-bce then vae: the same." in same
    )
    assert "Gap vae − dcgan-wgan-gp: ours +55, theirs +34.2: same sign, 1.61x theirs." in same
    assert "vae: ours 90, theirs 58.7: +31.3 (1.53x theirs)." in same

    swapped = agreement({"dcgan-bce": 30.0, "dcgan-wgan-gp": 45.0}, theirs, True)
    assert swapped[0] == "No value of ours yet for vae: left out below."
    assert swapped[1].endswith(": differs: dcgan-wgan-gp vs dcgan-bce swap.")
    assert "Gap dcgan-bce − dcgan-wgan-gp: ours -15, theirs +2: opposite sign." in swapped
    assert agreement({"a": 1.0, "b": 1.0}, {"a": 1.0, "b": 2.0}, True)[1].endswith(
        ": a tie on one side."
    )

    # higher is better (e.g. precision): the best is the largest
    assert agreement({"a": 0.9, "b": 0.5}, {"a": 0.8, "b": 0.6}, False)[0].startswith(
        "Ordering, best first: ours a then b; theirs a then b: the same"
    )
    assert agreement({"vae": 90.0}, theirs, True)[1] == (
        "Ordering and gaps need two variants with values on both sides."
    )
