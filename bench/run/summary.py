"""What a `bench run` reports at its end: the Summary every executor files cell outcomes in
(`record`), its closing lines (`echo_summary`), and the command that resumes the run."""

from __future__ import annotations

import shlex
from dataclasses import dataclass, field

from bench.suite.expand import Cell


@dataclass
class Summary:
    finished: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)
    interrupted: str | None = None  # the signal ("SIGINT", "SIGTERM") that stopped the suite
    interrupted_at: dict[str, int] = field(default_factory=dict)  # cell -> step it resumes from
    not_run: list[str] = field(default_factory=list)  # cells never started (interruption)
    # search trials that failed: counted as the worst value by the search, not a failed suite
    trials_failed: list[tuple[str, str]] = field(default_factory=list)
    # (prefix, cell) that another worker holds a live claim on (bench/tracking/claims.py): the
    # runner waits for them, and takes them over when their worker dies
    elsewhere: list[tuple[str, Cell]] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failed and self.interrupted is None


@dataclass(frozen=True)
class Outcome:
    """How one cell's attempt ended: finished (no reason), failed (reason), or interrupted by a
    signal at a step (a checkpoint was saved there)."""

    reason: str | None = None
    interrupted: str | None = None
    step: int | None = None
    elsewhere: str | None = None  # another worker holds the cell (its worker id), or finished it


def record(summary: Summary, cell: Cell, outcome: Outcome, prefix: str = "") -> None:
    if outcome.elsewhere is not None:
        summary.elsewhere.append((prefix or cell.name, cell))
    elif outcome.interrupted is not None:
        summary.interrupted = summary.interrupted or outcome.interrupted
        summary.interrupted_at[cell.name] = outcome.step
    elif outcome.reason is None:
        summary.finished.append(cell.name)
    elif cell.trial is not None:
        summary.trials_failed.append((cell.name, outcome.reason))
    else:
        summary.failed.append((cell.name, outcome.reason))


def echo_summary(name: str, summary: Summary, echo) -> None:
    counts = (
        f"suite {name}: {len(summary.finished)} finished, {len(summary.skipped)} skipped, "
        f"{len(summary.failed)} failed"
    )
    if summary.interrupted:
        counts += f", {len(summary.not_run)} not run: interrupted by {summary.interrupted}"
    for name, step in summary.interrupted_at.items():
        counts += f"; {name} resumes from step {step}"
    echo(counts)
    for title, names in (
        ("finished", summary.finished),
        ("skipped", summary.skipped),
        ("not run", summary.not_run),
    ):
        if names:
            echo(f"  {title}: {', '.join(names)}")
    for name, reason in summary.failed:
        echo(f"  failed {name}: {reason}")
    if summary.trials_failed:
        echo(
            f"  {len(summary.trials_failed)} search trials failed (each counts as the worst value):"
        )
    for name, reason in summary.trials_failed:
        echo(f"    {name}: {reason}")


def resume_command(
    suite_file: str,
    overrides: tuple[str, ...],
    options: dict[str, str | None],
    compile_networks: bool | None,
    plugin_files: tuple[str, ...] = (),
) -> str:
    """The `bench run` command that resumes this one: the same suite, overrides, plugins and
    options (those given), without --rerun (which would start the cells over)."""
    again = ["bench", "run", suite_file]
    for override in overrides:
        again += ["--set", override]
    for plugin in plugin_files:
        again += ["--plugin", plugin]
    for option, value in options.items():
        again += [option, value] if value else []
    if compile_networks is not None:
        again.append("--compile" if compile_networks else "--no-compile")
    return shlex.join(again)
