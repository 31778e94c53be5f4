"""Cell ids are a contract: a finished cell is found again by its id, so code that changes them
must do it on purpose (bump CODE_VERSION, then regenerate tests/golden/cell_ids.json)."""

from __future__ import annotations

import json
from pathlib import Path

from bench.suite.expand import expand
from bench.suite.load import load_suite
from bench.suite.search import follow_up_cells, trial_cells

ROOT = Path(__file__).parents[1]
GOLDEN = Path(__file__).parent / "golden" / "cell_ids.json"


def shipped_suite_ids() -> dict[str, dict[str, str]]:
    """Every cell of every shipped suite by name: its cells, and with a search every trial and the
    follow-up cells of each variant's first trial."""
    ids = {}
    for path in sorted((ROOT / "suites").glob("*.yaml")):
        suite = load_suite(path)
        cells = {cell.name: cell.id for cell in expand(suite)}
        if suite.search is not None:
            trials = trial_cells(suite)
            cells |= {cell.name: cell.id for cell in trials}
            firsts = {cell.variant.label: cell for cell in reversed(trials)}
            for first in firsts.values():
                for cell in follow_up_cells(suite, first):
                    cells[f"{cell.name} (after trial0)"] = cell.id
        ids[f"suites/{path.name}"] = cells
    return ids


def test_the_shipped_suites_keep_their_cell_ids():
    assert shipped_suite_ids() == json.loads(GOLDEN.read_text())
