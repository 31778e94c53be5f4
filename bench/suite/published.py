"""A suite's `published:` block: values a paper reports for (an analogue of) the suite's
variants, shown beside the suite's own in the report's Published results (bench/report/
published.py). Declared before running, like `claims:`; never tested (a published value is not a
sample of this harness's seeds), only set side by side with every protocol difference named.

    published:
      - metric: fid_inception
        source: Lucic et al. 2018, "Are GANs Created Equal?", NeurIPS, Table 2
        values: {dcgan-bce: {mean: 26.5, sd: 1.6}, vae: {mean: 58.7, sd: 1.2}}
        protocol: {samples: 10000, reference: test, reference_images: 10000}
        differences: ["their networks: ...; ours: ..."]
        note: the values as recalled, not confirmed against the paper
"""

from __future__ import annotations

import difflib

from pydantic import BaseModel, ConfigDict, Field


class PublishedValue(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    mean: float
    sd: float | None = Field(None, ge=0, description="their spread, as they state it")


class PublishedProtocol(BaseModel):
    """How their numbers were measured, in the terms the report can check against the runs."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    samples: int | None = Field(None, gt=0, description="generated images per value")
    reference: str | None = Field(None, description="the real split they were compared with")
    reference_images: int | None = Field(None, gt=0, description="real images compared with")


class PublishedConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    metric: str = Field(..., description="the metric key their values correspond to")
    source: str = Field(..., min_length=1, description="the citation: paper, table")
    values: dict[str, PublishedValue] = Field(
        ..., min_length=1, description="variant label -> their mean (and sd) for its analogue"
    )
    statistic: str = Field(
        "mean ± sd", description="what their number and spread are (e.g. of the best setting)"
    )
    protocol: PublishedProtocol = PublishedProtocol()
    differences: list[str] = Field(
        [], description="every way their set-up differs from the suite's, in words"
    )
    note: str = Field("", description="anything a reader must know, e.g. values not confirmed")


def check_published(published: list[PublishedConfig], labels: list[str], metrics: list[str]):
    """Every block names a metric of the metric table and variants of this suite; a ValueError
    (the loader turns it into one line) names the first that does not."""
    for index, block in enumerate(published):
        where = f"published[{index}] ({block.source})"
        if block.metric not in metrics:
            guess = difflib.get_close_matches(block.metric, metrics, n=1)
            hint = f" (did you mean '{guess[0]}'?)" if guess else ""
            raise ValueError(f"{where}: metric {block.metric!r} is not in the metric table{hint}")
        for label in block.values:
            if label not in labels:
                guess = difflib.get_close_matches(label, labels, n=1)
                hint = f" (did you mean '{guess[0]}'?)" if guess else ""
                raise ValueError(
                    f"{where}: values name {label!r}, not a variant of this suite{hint}; "
                    f"variants: {', '.join(labels)}"
                )
