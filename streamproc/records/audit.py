"""A tamper-evident, append-only audit log: JSON Lines, hash-chained, HMAC-anchored.

Why a second log beside the watchlist's SQLite ``audit`` table: rows in a database can be
edited silently by anyone who can write the file. Here every record carries the hash of the
previous one (an edit, deletion, insertion or reordering breaks the chain at a known line) and
an HMAC over its own hash under a secret key kept outside the log (so rewriting the whole file
with a fresh, self-consistent chain is detected too).

Files (in the watchlist directory)::

    audit.log    one record per line, canonical JSON (sorted keys, no spaces, UTF-8)
    audit.key    32 random bytes as hex, mode 0600; may live elsewhere (``key_path``)

Record: ``seq`` (1, 2, …), ``at`` (ISO-8601 UTC), ``actor``, ``action``, ``subject_id`` (or null),
``details`` (small JSON object), ``reason``, ``prev`` (the previous record's ``hash``; 64 zeros for
seq 1), ``hash`` (sha256 of the canonical JSON of the record without ``hash`` and ``mac``) and
``mac`` (hex HMAC-SHA256(key, hash)).

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
import hashlib
import hmac
import json
import math
import os
import re
import secrets
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final, Self

from streamproc.errors import StreamprocError

LOG_FILE: Final = "audit.log"
KEY_FILE: Final = "audit.key"
GENESIS: Final = "0" * 64
ACTIONS: Final = (
    "log_created",
    "enrol",
    "remove",
    "expire",
    "identify",
    "config_change",
    "pipeline_start",
    "pipeline_stop",
    "flag",
    "review",
    "checkpoint",
    "repair",
)
"""The actions streamproc writes; others matching ``[a-z][a-z0-9_]*`` are accepted for extensions."""

MAX_NUMBERS_IN_LIST: Final = 64
MAX_STRING: Final = 4096
_FIELDS: Final = frozenset({"seq", "at", "actor", "action", "subject_id", "details", "reason", "prev", "hash", "mac"})
_ACTION_RE: Final = re.compile(r"[a-z][a-z0-9_]*")
_HEX64_RE: Final = re.compile(r"[0-9a-f]{64}")
_TAIL_BLOCK: Final = 1 << 16

JSON = None | bool | int | float | str | list["JSON"] | dict[str, "JSON"]


class AuditError(StreamprocError):
    """The audit log cannot be created, opened or appended to (or a detail value is refused)."""


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the log, located by line (1-based) and seq where known."""

    line: int | None
    seq: int | None
    message: str

    def __str__(self) -> str:
        where = [f"line {self.line}"] if self.line is not None else []
        where += [f"seq {self.seq}"] if self.seq is not None else []
        return f"{', '.join(where) or 'log'}: {self.message}"


@dataclass(frozen=True)
class Checkpoint:
    """The head of the chain at one moment; stored elsewhere, it makes truncation below it detectable."""

    seq: int
    hash: str
    mac: str

    def to_json(self) -> str:
        return json.dumps({"seq": self.seq, "hash": self.hash, "mac": self.mac}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> Checkpoint:
        try:
            obj = json.loads(text)
            cp = cls(seq=obj["seq"], hash=obj["hash"], mac=obj["mac"])
        except (ValueError, KeyError, TypeError) as err:
            raise AuditError(f"not an audit checkpoint (expected JSON with seq, hash, mac): {err}") from None
        if not (
            isinstance(cp.seq, int)
            and not isinstance(cp.seq, bool)
            and cp.seq >= 1
            and isinstance(cp.hash, str)
            and _HEX64_RE.fullmatch(cp.hash)
            and isinstance(cp.mac, str)
            and _HEX64_RE.fullmatch(cp.mac)
        ):
            raise AuditError("not an audit checkpoint: seq must be >= 1 and hash, mac 64 hex digits")
        return cp


@dataclass(frozen=True)
class AuditRecord:
    """One parsed record (``at`` as an aware UTC datetime)."""

    seq: int
    at: datetime
    actor: str
    action: str
    subject_id: str | None
    details: Mapping[str, Any]
    reason: str
    prev: str
    hash: str
    mac: str


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
        if not actor.strip():
            raise AuditError("audit records need an actor (operator identity)")
        if not _ACTION_RE.fullmatch(action):
            raise AuditError(f"audit action must match [a-z][a-z0-9_]*, not {action!r}")
        clean = _check_details(details or {})
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
            record = self._seal(body)
            _write_all(fd, _canonical(record) + b"\n")
            os.fsync(fd)
        return _to_record(record)

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
            details={"torn_line": line, "bytes_dropped": len(dropped), "dropped_sha256": _sha(dropped)},
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
                obj, error = _parse(raw)
                if obj is None:
                    raise AuditError(f"{self._path} line {lineno}: {error}")
                yield _to_record(obj)

    def verify(self, checkpoint: Checkpoint | None = None) -> list[Problem]:
        """Check every line: form, seq order, chain link, hash and MAC; then the checkpoint, if given.

        Without a checkpoint, removing the last records is *not* detectable (see the module docstring)."""
        problems: list[Problem] = []
        expected_seq, expected_prev = 1, GENESIS
        last_seq, last_line = 0, 0
        at_checkpoint: tuple[int, str] | None = None
        with self._path.open("rb") as fh:
            for lineno, raw in enumerate(fh, 1):
                if not raw.endswith(b"\n"):
                    problems.append(
                        Problem(
                            lineno,
                            None,
                            f"torn tail at line {lineno} ({len(raw)} bytes without a newline: crash mid-write?); "
                            "run `streamproc audit repair --truncate-torn-tail`",
                        )
                    )
                    break
                obj, error = _parse(raw)
                if obj is None:
                    problems.append(Problem(lineno, None, error))
                    continue
                seq = obj["seq"]
                problems += (Problem(lineno, seq, msg) for msg in self._check(obj, raw, expected_seq, expected_prev))
                if checkpoint is not None and seq == checkpoint.seq and at_checkpoint is None:
                    at_checkpoint = (lineno, obj["hash"])
                expected_seq, expected_prev = seq + 1, obj["hash"]
                last_seq, last_line = seq, lineno
        if last_line == 0 and not problems:
            problems.append(Problem(None, None, "the log is empty (its first record, log_created, is missing)"))
        if checkpoint is not None:
            problems += self._check_checkpoint(checkpoint, at_checkpoint, last_seq, last_line)
        return problems

    # ------------------------------------------------------------------------------------ internals
    def _seal(self, body: dict[str, Any]) -> dict[str, Any]:
        digest = _sha(_canonical(body))
        return {**body, "hash": digest, "mac": self._mac(digest)}

    def _mac(self, digest: str) -> str:
        return hmac.new(self._key, digest.encode("ascii"), hashlib.sha256).hexdigest()

    def _check(self, obj: dict[str, Any], raw: bytes, expected_seq: int, expected_prev: str) -> list[str]:
        found: list[str] = []
        seq = obj["seq"]
        if seq != expected_seq:
            kind = "records missing before it" if seq > expected_seq else "out of order or duplicated"
            found.append(f"seq {seq} where {expected_seq} was expected ({kind})")
        if obj["prev"] != expected_prev:
            what = "the chain's start" if expected_prev == GENESIS else "the previous line's hash"
            found.append(f"prev does not match {what} (a record was deleted, inserted or moved here)")
        body = {k: v for k, v in obj.items() if k not in ("hash", "mac")}
        if _sha(_canonical(body)) != obj["hash"]:
            found.append("content does not match its hash (the record was edited)")
        if not hmac.compare_digest(self._mac(obj["hash"]), obj["mac"]):
            found.append("MAC mismatch (record written without this log's key: forged or rewritten)")
        if _canonical(obj) + b"\n" != raw:
            found.append("line is not in canonical form (edited by hand?)")
        return found

    def _check_checkpoint(
        self, cp: Checkpoint, at_checkpoint: tuple[int, str] | None, last_seq: int, last_line: int
    ) -> list[Problem]:
        found: list[Problem] = []
        if not hmac.compare_digest(self._mac(cp.hash), cp.mac):
            found.append(
                Problem(None, cp.seq, "checkpoint MAC does not match this key (forged checkpoint or wrong key)")
            )
        if at_checkpoint is None:
            if last_seq < cp.seq:
                found.append(
                    Problem(
                        last_line or None,
                        last_seq or None,
                        f"log ends at seq {last_seq} but the checkpoint records seq {cp.seq}: "
                        f"{cp.seq - last_seq} or more record(s) were removed from the tail",
                    )
                )
            else:
                found.append(Problem(None, cp.seq, "the checkpoint's record is missing from the log"))
        elif at_checkpoint[1] != cp.hash:
            found.append(
                Problem(at_checkpoint[0], cp.seq, "record differs from the checkpoint (hash mismatch): log rewritten")
            )
        return found

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
def _canonical(obj: Mapping[str, Any]) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


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


def _check_details(details: Mapping[str, Any]) -> dict[str, JSON]:
    """Copy details as plain JSON, refusing what could be biometric data: bytes, long numeric lists, long text."""
    if not isinstance(details, Mapping):
        raise AuditError("audit details must be a mapping")
    cleaned: dict[str, JSON] = _clean(details, "details")
    return cleaned


def _clean(value: Any, where: str) -> Any:
    if value is None or isinstance(value, bool | int | str):
        if isinstance(value, str) and len(value) > MAX_STRING:
            raise AuditError(f"audit {where}: text longer than {MAX_STRING} characters (encoded image data?)")
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise AuditError(f"audit {where}: {value} is not valid JSON")
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        raise AuditError(f"audit {where}: bytes are refused (face images never go into the audit log)")
    if isinstance(value, Mapping):
        out: dict[str, Any] = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise AuditError(f"audit {where}: keys must be strings, not {type(k).__name__}")
            out[k] = _clean(v, f"{where}.{k}")
        return out
    if isinstance(value, list | tuple):
        numbers = sum(isinstance(v, int | float) and not isinstance(v, bool) for v in value)
        if numbers > MAX_NUMBERS_IN_LIST:
            raise AuditError(
                f"audit {where}: a list of {numbers} numbers is refused (embeddings never go into the audit log)"
            )
        return [_clean(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise AuditError(f"audit {where}: {type(value).__name__} is not plain JSON (arrays and images are refused)")


def _parse(raw: bytes) -> tuple[dict[str, Any], str] | tuple[None, str]:
    """A structurally valid record, or None and why not."""
    try:
        obj = json.loads(raw)
    except UnicodeDecodeError:
        return None, "not valid UTF-8"
    except json.JSONDecodeError as err:
        return None, f"not valid JSON ({err.msg})"
    if not isinstance(obj, dict):
        return None, "not a JSON object"
    if set(obj) != _FIELDS:
        missing, extra = sorted(_FIELDS - set(obj)), sorted(set(obj) - _FIELDS)
        return None, f"wrong fields (missing {missing}, unexpected {extra})"
    seq = obj["seq"]
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        return None, f"seq {seq!r} is not a positive integer"
    for name in ("at", "actor", "action", "reason", "prev", "hash", "mac"):
        if not isinstance(obj[name], str):
            return None, f"{name} is not a string"
    if obj["subject_id"] is not None and not isinstance(obj["subject_id"], str):
        return None, "subject_id is neither a string nor null"
    if not isinstance(obj["details"], dict):
        return None, "details is not an object"
    if not all(_HEX64_RE.fullmatch(obj[n]) for n in ("prev", "hash", "mac")):
        return None, "prev, hash and mac must be 64 lowercase hex digits"
    try:
        at = datetime.fromisoformat(obj["at"])
    except ValueError:
        return None, f"at {obj['at']!r} is not an ISO-8601 time"
    if at.utcoffset() is None or at.utcoffset() != UTC.utcoffset(None):
        return None, f"at {obj['at']!r} is not in UTC"
    return obj, ""


def _to_record(obj: Mapping[str, Any]) -> AuditRecord:
    return AuditRecord(
        seq=obj["seq"],
        at=datetime.fromisoformat(obj["at"]),
        actor=obj["actor"],
        action=obj["action"],
        subject_id=obj["subject_id"],
        details=obj["details"],
        reason=obj["reason"],
        prev=obj["prev"],
        hash=obj["hash"],
        mac=obj["mac"],
    )


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
    obj, error = _parse(os.pread(fd, size - start, start))
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


__all__ = [
    "ACTIONS",
    "KEY_FILE",
    "LOG_FILE",
    "AuditError",
    "AuditLog",
    "AuditRecord",
    "Checkpoint",
    "Problem",
]
