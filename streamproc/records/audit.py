"""A tamper-evident, append-only audit log: JSON Lines, hash-chained, HMAC-anchored.

Why a second log beside the watchlist's SQLite ``audit`` table: rows in a database can be
edited silently by anyone who can write the file. Here every record carries the hash of the
previous one (an edit, deletion, insertion or reordering breaks the chain at a known line) and
an HMAC over its own hash under a secret key kept outside the log (so rewriting the whole file
with a fresh, self-consistent chain is detected too).

Files (in the watchlist directory)::

    audit.log    one record per line, canonical JSON (sorted keys, no spaces, UTF-8)
    audit.key    32 random bytes as hex, mode 0600; may live elsewhere (``key_path``)

The record format, hash chain and seal are in :mod:`streamproc.records.chain`; verification is in
:mod:`streamproc.records.verify`. This module is the log file: its key, creation, locking, appends and repair.

What is *not* detected, honestly:

* **Truncating the tail** (removing the last records) leaves a valid, shorter chain. Only a
  :class:`Checkpoint` exported earlier and stored elsewhere (``audit checkpoint``) reveals it:
  ``verify(checkpoint)`` reports a log that ends below the checkpoint's seq, or differs at it.
* Anyone holding the key can forge a whole new chain; checkpoints stored elsewhere still catch a
  rewrite of any record they cover. Keep the key (``--key``) off the machine's shared storage
  where you can.

Writers: each append opens the log with ``O_APPEND``, takes an exclusive ``flock`` (serialising
processes and threads), reads the last record to chain onto, writes one line, then flushes and
fsyncs. A crash mid-write leaves a *torn tail* (a last line without newline): ``verify`` reports
it, and appends are refused until :meth:`AuditLog.repair_torn_tail` (``audit repair
--truncate-torn-tail``) cuts it off and logs that it did.

Pipelines must count comparisons that match nothing and log only the totals (for example in the
``pipeline_stop`` record's details); per-face records would be a log of everyone who walked by.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Self

from streamproc.records.chain import (
    GENESIS,
    AuditError,
    AuditRecord,
    Checkpoint,
    canonical,
    check_entry,
    parse,
    seal,
    sha,
    to_record,
)
from streamproc.records.verify import Problem, verify_log

LOG_FILE: Final = "audit.log"
KEY_FILE: Final = "audit.key"
_TAIL_BLOCK: Final = 1 << 16


class AuditLog:
    """Handle on ``DIR/audit.log`` and its key; holds no open file, so it is safe to share between threads."""

    def __init__(self, path: Path, key: bytes) -> None:
        self._path = path
        self._key = key

    @property
    def path(self) -> Path:
        return self._path

    @classmethod
    def create(cls, directory: Path, key_path: Path | None = None, *, actor: str = "streamproc") -> Self:
        """Create the log and a fresh key (mode 0600), and write the first record. Never overwrites either."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / LOG_FILE
        key_path = key_path or directory / KEY_FILE
        if path.exists():
            raise AuditError(f"{path} already exists; open it instead")
        if key_path.exists():
            raise AuditError(f"{key_path} already exists but {path} does not; refusing to reuse a key for a new log")
        key = secrets.token_bytes(32)
        key_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="ascii") as fh:
            fh.write(key.hex() + "\n")
            fh.flush()
            os.fsync(fh.fileno())
        os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o640))
        _fsync_dir(directory)
        _fsync_dir(key_path.parent)
        log = cls(path, key)
        log.append(actor, "log_created", reason="audit log created", details={"key_file": key_path.name})
        return log

    @classmethod
    def open(cls, directory: Path, key_path: Path | None = None) -> Self:
        """Open an existing log; the key must exist and be private to its owner (mode 0600 or stricter)."""
        path = directory / LOG_FILE
        key_path = key_path or directory / KEY_FILE
        if not path.is_file():
            raise AuditError(f"no audit log at {path}")
        return cls(path, _read_key(key_path))

    @classmethod
    def open_or_create(cls, directory: Path, key_path: Path | None = None, *, actor: str = "streamproc") -> Self:
        """Open the log, creating it (and its key) on first use, e.g. at the first enrolment.

        Processes starting together (an embed service and its workers on one host) must not both create it:
        the check and the creation run under an exclusive lock on the directory itself (no extra file).
        """
        if (directory / LOG_FILE).exists():
            return cls.open(directory, key_path)
        directory.mkdir(parents=True, exist_ok=True)
        fd = os.open(directory, os.O_RDONLY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            if (directory / LOG_FILE).exists():
                return cls.open(directory, key_path)
            return cls.create(directory, key_path, actor=actor)
        finally:
            os.close(fd)  # releases the lock

    # ------------------------------------------------------------------------------------ writing
    def append(
        self,
        actor: str,
        action: str,
        *,
        subject_id: str | None = None,
        reason: str = "",
        details: Mapping[str, Any] | None = None,
        now: datetime | None = None,
    ) -> AuditRecord:
        """Append one record, chained onto the current last one; durable (fsynced) when this returns."""
        clean = check_entry(actor, action, details or {})
        at = (now or datetime.now(UTC)).astimezone(UTC).isoformat(timespec="microseconds")
        with self._locked() as fd:
            last = _last_record(fd, self._path)
            body: dict[str, Any] = {
                "seq": (last["seq"] + 1) if last else 1,
                "at": at,
                "actor": actor,
                "action": action,
                "subject_id": subject_id,
                "details": clean,
                "reason": reason,
                "prev": last["hash"] if last else GENESIS,
            }
            record = seal(self._key, body)
            _write_all(fd, canonical(record) + b"\n")
            os.fsync(fd)
        return to_record(record)

    def repair_torn_tail(self, actor: str, reason: str = "") -> AuditRecord:
        """Cut off a torn last line (crash mid-write) and log the cut, with the sha256 of the bytes dropped."""
        with self._locked() as fd:
            size = os.fstat(fd).st_size
            if size == 0 or os.pread(fd, 1, size - 1) == b"\n":
                raise AuditError(f"{self._path} has no torn tail; nothing to repair")
            keep = _last_newline_end(fd, size)
            dropped = os.pread(fd, size - keep, keep)
            line = _count_lines(fd, keep) + 1
            os.ftruncate(fd, keep)
            os.fsync(fd)
        return self.append(
            actor,
            "repair",
            reason=reason or "truncated a torn tail (incomplete last line)",
            details={"torn_line": line, "bytes_dropped": len(dropped), "dropped_sha256": sha(dropped)},
        )

    # ------------------------------------------------------------------------------------ reading
    def head(self) -> Checkpoint:
        """The last record's seq, hash and MAC: export it (``audit checkpoint``) and store it elsewhere."""
        with self._locked(shared=True) as fd:
            last = _last_record(fd, self._path)
        if last is None:
            raise AuditError(f"{self._path} is empty")
        return Checkpoint(seq=last["seq"], hash=last["hash"], mac=last["mac"])

    def records(self) -> Iterator[AuditRecord]:
        """Yield records in file order without checking the chain (use :meth:`verify`); a torn tail is skipped."""
        with self._path.open("rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if not raw.endswith(b"\n"):
                    return
                obj, error = parse(raw)
                if obj is None:
                    raise AuditError(f"{self._path} line {lineno}: {error}")
                yield to_record(obj)

    def verify(self, checkpoint: Checkpoint | None = None) -> list[Problem]:
        """Check every line: form, seq order, chain link, hash and MAC; then the checkpoint, if given.

        Without a checkpoint, removing the last records is *not* detectable (see the module docstring)."""
        return verify_log(self._path, self._key, checkpoint)

    # ------------------------------------------------------------------------------------ internals
    @contextlib.contextmanager
    def _locked(self, *, shared: bool = False) -> Iterator[int]:
        """The log's fd under flock: appends are exclusive; flock is per open file, so threads serialise too."""
        fd = os.open(self._path, os.O_RDONLY if shared else os.O_RDWR | os.O_APPEND)
        try:
            fcntl.flock(fd, fcntl.LOCK_SH if shared else fcntl.LOCK_EX)
            yield fd
        finally:
            os.close(fd)  # closing releases the lock


# ---------------------------------------------------------------------------------------- helpers
def _read_key(key_path: Path) -> bytes:
    try:
        st = key_path.stat()
        text = key_path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        raise AuditError(f"audit key {key_path} is missing (without it the log cannot be verified)") from None
    if st.st_mode & 0o077:
        raise AuditError(f"audit key {key_path} is readable by others (mode {st.st_mode & 0o777:o}); chmod 600 it")
    try:
        key = bytes.fromhex(text)
    except ValueError:
        raise AuditError(f"audit key {key_path} is not hex") from None
    if len(key) < 32:
        raise AuditError(f"audit key {key_path} is shorter than 32 bytes")
    return key


def _last_newline_end(fd: int, size: int) -> int:
    """Offset just after the last newline before ``size`` (0 if none), reading backwards in blocks."""
    end = size
    while end > 0:
        start = max(0, end - _TAIL_BLOCK)
        block = os.pread(fd, end - start, start)
        idx = block.rfind(b"\n")
        if idx >= 0:
            return start + idx + 1
        end = start
    return 0


def _count_lines(fd: int, upto: int) -> int:
    count, offset = 0, 0
    while offset < upto:
        block = os.pread(fd, min(1 << 20, upto - offset), offset)
        count += block.count(b"\n")
        offset += len(block)
    return count


def _last_record(fd: int, path: Path) -> dict[str, Any] | None:
    """The last complete record, or None for an empty log; refuses a torn tail or an unreadable last line."""
    size = os.fstat(fd).st_size
    if size == 0:
        return None
    if os.pread(fd, 1, size - 1) != b"\n":
        line = _count_lines(fd, size) + 1
        raise AuditError(
            f"{path}: torn tail at line {line} (crash mid-write?); appends are refused until "
            "`streamproc audit repair --truncate-torn-tail` is run"
        )
    start = _last_newline_end(fd, size - 1)
    obj, error = parse(os.pread(fd, size - start, start))
    if obj is None:
        raise AuditError(f"{path}: the last record is unreadable ({error}); run `streamproc audit verify`")
    return obj


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


__all__ = ["KEY_FILE", "LOG_FILE", "AuditLog"]
