"""`bench report`: render the report and export the runs in the formats asked for."""

from __future__ import annotations

from pathlib import Path

from bench.report import export, render
from bench.report.load import experiment_runs, load_report, open_experiment

ALL = (*render.FORMATS, *export.FORMATS)


def write_formats(
    suite: str, tracking_uri: str | None, overrides: tuple[str, ...], formats: tuple[str, ...],
    out: str | None,
) -> list[str]:  # fmt: skip
    """Write SUITE's report (md, html) and runs table (csv, json) in `formats` under `out`
    (default reports/<suite name>/); returns the lines to print."""
    rendered = tuple(f for f in formats if f in render.FORMATS)
    exported = tuple(f for f in formats if f in export.FORMATS)
    if rendered:
        loaded = load_report(suite, tracking_uri, overrides)
        name, runs = loaded.suite_name, loaded.runs
    else:  # an export alone needs the runs, not the report's statistics and figures
        store = open_experiment(suite, tracking_uri, overrides)
        name, runs = store.name, experiment_runs(store)
    folder = Path(out) if out else Path("reports") / name
    written = render.write_report(loaded, folder, rendered) if rendered else []
    written += export.write_runs(runs, folder, exported) if exported else []
    lines = [f"wrote {path}" for path in written]
    if exported:
        lines.append(f"{name}: {len(export.cell_runs(runs))} cell runs exported")
    if rendered:
        failed = len(loaded.unfinished)
        lines.append(
            f"{name}: {len(loaded.finished)} finished cells of {len(loaded.cells)}"
            + (f", {failed} failed or missing (listed in the report)" if failed else "")
        )
    return lines
