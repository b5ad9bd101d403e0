"""Run claims: a run is claimed before it starts, so two sweeps on one results folder never compute it twice.

A claim is the file ``<stem>.claim`` beside the run's results, created atomically with
``O_CREAT | O_EXCL`` by the process that computes the run (``harness.run_one``) and removed when it
has written its results.  It holds the claimant's pid, host, start time and, on Linux, the
process's start tick (``/proc/<pid>/stat``), so a reused pid is not taken for the claimant.

A claim whose claimant is gone is *stale* and the next claimant releases it: on the same host the
claimant is gone when its pid no longer runs (or is a zombie, or is another process with that pid).
A claim from another host cannot be checked from here and is respected; if that host's process is
known to be dead, delete the ``.claim`` file the message names.  Releasing a stale claim happens
under a short break lock (``<stem>.claim.break``, itself released after ``BREAK_LOCK_SECONDS``)
so two processes breaking the same stale claim cannot delete each other's fresh one.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import time
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

CLAIM_SUFFIX = ".claim"
_HELD: set[str] = set()  # nonces of the claims this process holds
BREAK_LOCK_SECONDS = 30.0
FRESH_SECONDS = 10.0  # an empty claim younger than this is being written, not stale


@dataclass(frozen=True)
class Holder:
    """Who claimed a run."""

    pid: int
    host: str
    started: str  # ISO time the claim was made
    proc_start: str = ""  # /proc/<pid>/stat field 22, "" where unknown
    nonce: str = ""

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {self.started}"

    def alive(self) -> bool:
        """Whether the claimant still runs (a claim from another host counts as alive)."""
        if self.host != socket.gethostname():
            return True
        if self.pid == os.getpid():
            return self.nonce in _HELD  # this process: alive only while it holds that claim
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # exists, owned by another user
        state, start = _proc_stat(self.pid)
        if state == "Z":
            return False  # a zombie: dead, not yet reaped
        return not (self.proc_start and start and start != self.proc_start)  # the pid was reused


@dataclass
class Claim:
    """A claim this process holds; :meth:`release` (or leaving the ``with`` block) removes it."""

    path: Path
    holder: Holder

    def release(self) -> None:
        _HELD.discard(self.holder.nonce)
        if _read(self.path) == self.holder:
            self.path.unlink(missing_ok=True)

    def __enter__(self) -> Claim:
        return self

    def __exit__(self, *exc) -> None:
        self.release()


def claim_path(stem: Path) -> Path:
    return stem.with_name(stem.name + CLAIM_SUFFIX)


def acquire(stem: Path) -> Claim | Holder:
    """Claim the run at ``stem``: a :class:`Claim` if this process now holds it, else the live
    :class:`Holder` of the claim that stands (a stale claim is released and taken over)."""
    path = claim_path(stem)
    path.parent.mkdir(parents=True, exist_ok=True)
    for _ in range(5):
        me = _me()
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            other = _read(path)
            if other is None and _age(path) < FRESH_SECONDS:
                time.sleep(0.05)  # being written this instant
                continue
            if other is not None and other.alive():
                return other
            _break(path, other)
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(json.dumps(asdict(me), sort_keys=True))
        _HELD.add(me.nonce)
        return Claim(path, me)
    other = _read(path)
    return other if other is not None else Holder(-1, "unknown", "unknown")


def holder(stem: Path) -> Holder | None:
    """The live claimant of the run at ``stem``, or None (no claim, or a stale one)."""
    other = _read(claim_path(stem))
    return other if other is not None and other.alive() else None


def clear_stale(stem: Path) -> bool:
    """Remove the claim at ``stem`` if its claimant is gone (a worker that died); returns whether it did."""
    path = claim_path(stem)
    other = _read(path)
    if not path.exists() or (other is not None and other.alive()) or (other is None and _age(path) < FRESH_SECONDS):
        return False
    _break(path, other)
    return not path.exists()


def clear_when_gone(stem: Path, timeout: float = 15.0, poll: float = 0.1) -> bool:
    """``clear_stale`` for a claimant an executor reported dead: a process killed with SIGKILL can
    still look alive for a moment (not yet torn down, more so on a loaded machine), so keep trying
    for up to ``timeout`` seconds; returns whether the claim is gone."""
    deadline = time.monotonic() + timeout
    while True:
        if clear_stale(stem) or not claim_path(stem).exists():
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll)


def _break(path: Path, seen: Holder | None) -> None:
    """Remove the stale claim ``seen`` at ``path``, unless another process is breaking it or it changed."""
    lock = path.with_name(path.name + ".break")
    if lock.exists() and _age(lock) > BREAK_LOCK_SECONDS:
        lock.unlink(missing_ok=True)  # a breaker that died mid-way
    try:
        os.close(os.open(lock, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644))
    except FileExistsError:
        time.sleep(0.05)
        return
    try:
        if _read(path) == seen:  # still the stale claim we judged, not a fresh one
            path.unlink(missing_ok=True)
    finally:
        lock.unlink(missing_ok=True)


def _me() -> Holder:
    return Holder(
        os.getpid(),
        socket.gethostname(),
        datetime.now(timezone.utc).isoformat(timespec="seconds"),
        _proc_stat(os.getpid())[1],
        secrets.token_hex(8),
    )


def _read(path: Path) -> Holder | None:
    """The claim at ``path``; None if absent, empty or unreadable."""
    try:
        raw = json.loads(path.read_text())
        return Holder(**{k: raw[k] for k in ("pid", "host", "started", "proc_start", "nonce")})
    except (OSError, ValueError, KeyError, TypeError):
        return None


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except OSError:
        return 0.0


def _proc_stat(pid: int) -> tuple[str, str]:
    """(state, start tick) of ``pid`` from ``/proc/<pid>/stat``; ("", "") where unavailable."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return "", ""
    fields = text.rsplit(")", 1)[-1].split()  # after the command name, which may hold spaces
    return (fields[0], fields[19]) if len(fields) > 19 else ("", "")
