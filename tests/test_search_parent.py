"""The election of a search's parent run (bench/tracking/runs.py, search_parent_run) on a real
SQLite store: no clock decides it, so a worker whose clock runs behind cannot keep a second
parent, concurrent workers agree on one, and the report reads only the elected one."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time

import pytest
from mlflow.tracking import MlflowClient

from bench import keys
from bench.report.search import latest_parents
from bench.tracking import runs, worker_identity
from bench.tracking.store import TrackingError

SEARCH = "0123456789abcdef"


def store(tracking_uri):
    client = MlflowClient(tracking_uri)
    return client, client.create_experiment("search-parents")


def parent_tags(claim: str | None) -> dict[str, str]:
    tags = {
        keys.TAG_SUITE: "s",
        keys.TAG_LABEL: "vae",
        keys.TAG_VARIANT: "vae",
        keys.TAG_STAGE: keys.STAGE_SEARCH,
        keys.TAG_SEARCH_ID: SEARCH,
    }
    return tags if claim is None else tags | {keys.TAG_CLAIM: claim}


def active_parents(client, experiment) -> list:
    return runs._search_parents(client, experiment, SEARCH)


def test_a_parent_chosen_meanwhile_wins_whatever_its_start_time(tracking_uri, monkeypatch):
    """The interleaving of issue #33 for search parents: worker B finds no parent, creates its
    candidate, and while B settles worker A (whose clock runs ahead, so its run looks younger)
    has created and chosen its own. Under the old rule (the oldest start time wins) B kept its
    own and the search had two parents; now B withdraws and joins A's."""
    client, experiment = store(tracking_uri)
    created = {}

    def a_elects_itself_while_b_settles(seconds):
        if "a" not in created:
            ahead = int(time.time() * 1000) + 90_000  # A's clock, 90 s ahead of B's
            run = client.create_run(experiment, start_time=ahead, tags=parent_tags(keys.CLAIM_HELD))
            created["a"] = run.info.run_id

    monkeypatch.setattr(runs.time, "sleep", a_elects_itself_while_b_settles)
    chosen = runs.search_parent_run(client, experiment, "s", "vae", SEARCH, new=False, settle=1)

    assert chosen == created["a"]
    assert [run.info.run_id for run in active_parents(client, experiment)] == [created["a"]]


def test_workers_that_start_a_search_at_once_agree_on_one_parent(tracking_uri):
    client, experiment = store(tracking_uri)
    chosen: list[str] = []

    def worker():
        mine = MlflowClient(tracking_uri)
        chosen.append(runs.search_parent_run(mine, experiment, "s", "vae", SEARCH, False, 0.2))

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert len(chosen) == 3 and len(set(chosen)) == 1
    assert [run.info.run_id for run in active_parents(client, experiment)] == chosen[:1]


def test_a_worker_never_joins_a_parent_that_is_only_marked(tracking_uri, monkeypatch):
    """The interleaving behind the CI failure at 5b92d03: worker A has marked its parent but not
    yet checked for rivals when worker C lists the parents. A may still withdraw (it saw B's mark),
    so C must wait for A's outcome instead of joining A's parent; here A withdraws while C waits,
    and C's search goes on under a parent that stays."""
    client, experiment = store(tracking_uri)
    marked = client.create_run(experiment, tags=parent_tags(keys.CLAIM_MARKED)).info.run_id

    def a_withdraws_while_c_waits(seconds):
        if client.get_run(marked).info.lifecycle_stage == "active":
            client.delete_run(marked)

    monkeypatch.setattr(runs.time, "sleep", a_withdraws_while_c_waits)
    chosen = runs.search_parent_run(client, experiment, "s", "vae", SEARCH, new=False, settle=1)

    assert chosen != marked
    assert [run.info.run_id for run in active_parents(client, experiment)] == [chosen]
    assert client.get_run(chosen).data.tags[keys.TAG_CLAIM] == keys.CLAIM_HELD


def marked_by(pid: int | None) -> dict[str, str]:
    """A marked parent's tags, its worker process `pid` of this machine (None: no worker tags, as
    from another machine or a version before them)."""
    tags = parent_tags(keys.CLAIM_MARKED)
    if pid is None:
        return tags
    return tags | {
        keys.TAG_WORKER: f"{worker_identity.host()}/{pid}/0badc0de",
        keys.TAG_WORKER_PID_SPACE: worker_identity.pid_space(),
    }


def test_a_parent_left_marked_by_a_dead_local_worker_is_withdrawn_and_the_search_goes_on(
    tracking_uri, monkeypatch
):
    """Its worker died between its mark and its check, so it can never be held: the next worker
    deletes it at once (no wait for MARKED_PATIENCE) and elects a parent of its own."""
    if not worker_identity.pid_space():
        pytest.skip("this /proc names no boot id or PID namespace, so no pid is trusted")
    client, experiment = store(tracking_uri)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    orphan = client.create_run(experiment, tags=marked_by(dead.pid)).info.run_id
    monkeypatch.setattr(runs, "MARKED_PATIENCE", -1.0)  # a wait would raise at once
    chosen = runs.search_parent_run(client, experiment, "s", "vae", SEARCH, new=False)

    assert chosen != orphan
    assert client.get_run(orphan).info.lifecycle_stage == "deleted"
    assert [run.info.run_id for run in active_parents(client, experiment)] == [chosen]
    assert client.get_run(chosen).data.tags[keys.TAG_CLAIM] == keys.CLAIM_HELD
    assert client.get_run(chosen).data.tags[keys.TAG_WORKER] == worker_identity.worker_id()


@pytest.mark.parametrize("worker", ["another machine", "a live local process"])
def test_a_parent_left_marked_by_a_worker_not_known_dead_stops_the_search_with_its_run_id(
    tracking_uri, monkeypatch, worker
):
    """Without proof that its worker is gone (another machine's pid, or a process that runs)
    nobody deletes it: after MARKED_PATIENCE the search stops with a line naming the run."""
    client, experiment = store(tracking_uri)
    pid = None if worker == "another machine" else os.getppid()
    marked = client.create_run(experiment, tags=marked_by(pid)).info.run_id
    monkeypatch.setattr(runs, "MARKED_PATIENCE", -1.0)
    monkeypatch.setattr(runs.time, "sleep", lambda seconds: None)
    with pytest.raises(TrackingError, match=f"{marked} stayed marked.*delete it"):
        runs.search_parent_run(client, experiment, "s", "vae", SEARCH, new=False, settle=1)
    assert [run.info.run_id for run in active_parents(client, experiment)] == [marked]


def test_a_later_worker_joins_the_chosen_parent_and_rerun_starts_a_new_one(tracking_uri):
    client, experiment = store(tracking_uri)
    first = runs.search_parent_run(client, experiment, "s", "vae", SEARCH, new=False)
    assert runs.search_parent_run(client, experiment, "s", "vae", SEARCH, new=False) == first
    fresh = runs.search_parent_run(client, experiment, "s", "vae", SEARCH, new=True)
    assert fresh != first
    assert runs.search_parent_run(client, experiment, "s", "vae", SEARCH, new=False) == fresh


def test_a_parent_from_before_the_election_counts_as_chosen(tracking_uri):
    client, experiment = store(tracking_uri)
    old = client.create_run(experiment, tags=parent_tags(None)).info.run_id
    assert runs.search_parent_run(client, experiment, "s", "vae", SEARCH, new=False) == old


def test_the_report_ignores_a_candidate_left_by_a_worker_that_died_mid_election(tracking_uri):
    client, experiment = store(tracking_uri)
    elected = runs.search_parent_run(client, experiment, "s", "vae", SEARCH, new=False)
    client.create_run(experiment, tags=parent_tags(keys.CLAIM_CANDIDATE))  # created last
    client.create_run(experiment, tags=parent_tags(keys.CLAIM_MARKED))  # its mark, never checked
    parents = active_parents(client, experiment)
    assert len(parents) == 3
    assert latest_parents(parents, {"vae": SEARCH})["vae"].info.run_id == elected
    assert runs.search_parent_run(client, experiment, "s", "vae", SEARCH, new=False) == elected
