"""Who a claim's worker is, and whether it still runs: worker ids (host/pid/nonce), the PID
namespace a pid means something in, and the checks on this machine's processes that let a dead
worker's claim end at once instead of after a lease (see `bench.tracking.claims`)."""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

from bench import keys

HOST_ENV = "BENCH_WORKER_HOST"  # the host part of worker ids (default: the machine's name)


def host() -> str:
    return os.environ.get(HOST_ENV) or socket.gethostname()


_identities: dict[int, str] = {}


def worker_id() -> str:
    """This process as a claimant: host/pid/nonce (the nonce tells a reused pid apart; a forked
    child is another claimant)."""
    pid = os.getpid()
    if pid not in _identities:
        _identities[pid] = f"{host()}/{pid}/{uuid.uuid4().hex[:8]}"
    return _identities[pid]


def pid_space() -> str:
    """Where this process's pid names it: "<boot id>/<pid namespace>", or "" where /proc lacks
    them. Containers that share a host name (docker --network host) differ here."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        return ""
    return f"{boot}/{namespace}" if boot and namespace else ""


def worker_of(run) -> str:
    return run.data.tags.get(keys.TAG_WORKER, "")


def is_process(run, pid: int) -> bool:
    """Whether the claim is provably that of process `pid` of this machine: same host, and the
    same boot id and PID namespace as this process (known)."""
    owner_host, _, rest = worker_of(run).partition("/")
    space = run.data.tags.get(keys.TAG_WORKER_PID_SPACE, "")
    same_machine = owner_host == host() and space != "" and space == pid_space()
    return same_machine and rest.partition("/")[0] == str(pid)


def local_pid(run) -> int | None:
    """The pid of the claim's worker when it is provably a process of this machine, else None."""
    pid = worker_of(run).partition("/")[2].partition("/")[0]
    return int(pid) if pid.isdigit() and is_process(run, int(pid)) else None


def process_gone(run) -> bool:
    """Whether the claim's worker is provably a process of this machine that no longer runs."""
    pid = local_pid(run)
    if pid is None or worker_of(run) == worker_id():
        return False
    if pid == os.getpid():  # our pid, another nonce: an earlier process that had our pid
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's process with that pid: alive
        return False
    return _exited(pid)


def _exited(pid: int) -> bool:
    """Whether process `pid` has exited and only waits for its parent to reap it: a zombie, to
    which kill(pid, 0) still answers (a Ray worker that died stays one until the raylet reaps it).
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:  # reaped meanwhile
        return True
    except OSError:
        return False
    state = stat.rpartition(")")[2].split()[:1]
    return state in (["Z"], ["X"])
