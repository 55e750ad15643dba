"""A crash-safe run directory.

Layout::

    config.yaml        resolved config
    manifest.json      versions, hashes, seed, times
    samples.jsonl      one Sample per (prompt_id, sample_index), with judgments   (materialised)
    metrics.json       {judge: {part: {...}}}                                   (materialised)
    summary.md         short Markdown report                                    (materialised)
    state/identity.json      what the records were generated from (refuse to mix)
    state/generations.jsonl  append-only log, one line per generated sample, written a batch at a time
    state/judgments.jsonl    append-only log, one line per (judge, sample, part) verdict
    state/requested.json     judge -> parts asked for (what a complete run has a verdict for)
    state/lock               held (``flock``) by the one process writing the run; names that process

Only the append-only logs are the source of truth. Each append is one ``write`` followed by ``fsync``,
so a ``kill -9`` can only leave a torn *last* line, which :meth:`JsonlLog.read` cuts off. Materialised
files are written to a temporary file and renamed into place, so they are either the old or the new
version, never half of one.

One process writes a run dir at a time: :meth:`RunDir.lock` takes an exclusive, non-blocking ``flock`` on
``state/lock``, so a second writer fails at once, naming the holder. The OS drops the lock when its
process dies, so a ``kill -9`` never leaves a stale lock behind.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, ClassVar

from safereason.errors import RunDirError


def atomic_write_text(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


class JsonlLog:
    """An append-only JSON-lines file that survives being killed mid-write."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def read(self) -> list[dict[str, Any]]:
        """All complete records; a torn final line (from a crash) is removed from the file."""
        if not self.path.exists():
            return []
        data = self.path.read_bytes()
        records: list[dict[str, Any]] = []
        good_end = 0
        pos = 0
        while pos < len(data):
            nl = data.find(b"\n", pos)
            if nl < 0:
                break  # torn last line: no newline was written
            line = data[pos:nl]
            try:
                records.append(json.loads(line))
            except ValueError:
                if data[nl + 1:].strip():
                    raise RunDirError(
                        f"{self.path} is corrupt at byte {pos} (not a crash-torn last line); "
                        "move the run dir away and start again"
                    ) from None
                break
            pos = good_end = nl + 1
        if good_end != len(data):
            with open(self.path, "r+b") as f:
                f.truncate(good_end)
                f.flush()
                os.fsync(f.fileno())
        return records

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        blob = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records)
        if not blob:
            return
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())

    def rewrite(self, records: Iterable[dict[str, Any]]) -> None:
        """Replace the log atomically (used to drop the rows of a half-written batch)."""
        atomic_write_text(self.path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


class RunDirBusyError(RunDirError):
    """Another process holds the run dir's lock."""


class RunDir:
    #: lock files this process holds, with their nesting depth (a locked command may call another)
    _held: ClassVar[dict[str, int]] = {}

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.state = self.path / "state"
        self.generations = JsonlLog(self.state / "generations.jsonl")
        self.judgments = JsonlLog(self.state / "judgments.jsonl")

    def create(self) -> None:
        if self.path.exists() and not self.path.is_dir():
            raise RunDirError(f"--out {self.path} exists and is not a directory")
        if self.path.is_dir() and not self._is_empty() and not (self.state / "identity.json").exists():
            raise RunDirError(
                f"--out {self.path} is a non-empty directory that is not a safereason run dir; "
                "pick a new or empty directory"
            )
        try:
            self.state.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunDirError(f"cannot create run dir {self.path}: {e.strerror}") from None

    def _is_empty(self) -> bool:
        """Empty, or holding nothing but what a start that failed before any record leaves (``state/lock``)."""
        entries = list(self.path.iterdir())
        if not entries:
            return True
        if [e.name for e in entries] != ["state"] or not self.state.is_dir():
            return False
        return all(e.name == "lock" for e in self.state.iterdir())

    def exists(self) -> bool:
        return (self.state / "identity.json").exists()

    @contextmanager
    def lock(self, command: str) -> Iterator[None]:
        """Hold the run dir's exclusive lock for ``command`` (e.g. ``"eval"``); fail at once if another process
        holds it. Re-entrant within a process. Where ``fcntl`` is missing (Windows) nothing is locked."""
        try:
            import fcntl
        except ImportError:  # pragma: no cover - POSIX only
            yield
            return
        if not self.state.is_dir():
            raise RunDirError(f"{self.path} is not a safereason run dir (no state/); nothing to lock")
        path = self.state / "lock"
        key = os.path.realpath(path)
        if key in RunDir._held:
            RunDir._held[key] += 1
            try:
                yield
            finally:
                RunDir._held[key] -= 1
            return
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunDirBusyError(f"run dir {self.path} is in use by {_holder(fd)}; wait for it to finish or "
                                      "stop it (a stopped or killed process releases the run dir at once)") from None
            holder = {"pid": os.getpid(), "host": socket.gethostname(), "command": f"safereason {command}",
                      "since": datetime.now(UTC).isoformat(timespec="seconds")}
            os.ftruncate(fd, 0)
            os.pwrite(fd, (json.dumps(holder) + "\n").encode(), 0)
            RunDir._held[key] = 1
            try:
                yield
            finally:
                del RunDir._held[key]
                os.ftruncate(fd, 0)
        finally:
            os.close(fd)  # closing the descriptor releases the lock

    def read_json(self, name: str) -> Any:
        p = self.path / name
        try:
            return json.loads(p.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except ValueError as e:
            raise RunDirError(f"{p} is not valid JSON: {e}") from None

    def write_json(self, name: str, obj: Any) -> None:
        atomic_write_text(self.path / name, json.dumps(obj, indent=2, ensure_ascii=False) + "\n")

    def check_identity(self, identity: dict[str, Any], *, record: bool = True,
                       normalize: Callable[[dict[str, Any]], dict[str, Any]] | None = None) -> None:
        """Refuse ``identity`` when this dir's records were generated from a different one; with ``record``,
        store it. An identity no record was generated from yet is replaced, so a start that failed before the
        first token never ties the dir to its settings. ``normalize`` maps a stored identity to today's form."""
        stored = self.read_json("state/identity.json")
        if stored is not None and normalize is not None:
            stored = normalize(stored)
        diff = [] if stored is None else identity_diff(stored, identity)
        has_records = self.generations.path.exists() and self.generations.path.stat().st_size > 0
        if diff and has_records:
            raise RunDirError(
                f"run dir {self.path} holds records of a different config ({'; '.join(diff[:6])}"
                f"{'; ...' if len(diff) > 6 else ''}); use a new --out directory, or the same settings to resume"
            )
        if record and (stored is None or diff):
            self.write_json("state/identity.json", identity)


def identity_diff(old: Any, new: Any, prefix: str = "") -> list[str]:
    """``key.sub: old -> new`` for each leaf that differs (a hash derived from the differing keys is left out)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: list[str] = []
        for k in sorted(set(old) | set(new), key=str):
            out += identity_diff(old.get(k), new.get(k), f"{prefix}{k}.")
        if len(out) > 1 and prefix == "":
            out = [d for d in out if not d.startswith("generation_hash:")] or out
        return out
    if old == new:
        return []

    def show(v: Any) -> str:
        text = "(unset)" if v is None else json.dumps(v, ensure_ascii=False, default=str)
        return text if len(text) <= 60 else text[:57] + "..."

    return [f"{prefix.rstrip('.')}: {show(old)} -> {show(new)}"]


def _holder(fd: int) -> str:
    """Who holds the lock, as the holder wrote it (it may be mid-write: then only "another process")."""
    try:
        info = json.loads(os.pread(fd, 4096, 0).decode())
        return (f"another process: pid {info['pid']} on {info['host']}, `{info['command']}`, "
                f"since {info['since']}")
    except (OSError, ValueError, KeyError, TypeError):
        return "another safereason process"
