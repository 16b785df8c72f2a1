"""The audit record's format: canonical JSON, the hash chain, the HMAC seal, and what details may hold.

Record: ``seq`` (1, 2, …), ``at`` (ISO-8601 UTC), ``actor``, ``action``, ``subject_id`` (or null),
``details`` (small JSON object), ``reason``, ``prev`` (the previous record's ``hash``; 64 zeros for
seq 1), ``hash`` (sha256 of the canonical JSON of the record without ``hash`` and ``mac``) and
``mac`` (hex HMAC-SHA256(key, hash)). Canonical JSON: sorted keys, no spaces, UTF-8, one record a line.

Details refuse what could be biometric data (bytes, long numeric lists, long text): the log records who
did what, never a face or an embedding.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import math
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from streamproc.errors import StreamprocError

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

JSON = None | bool | int | float | str | list["JSON"] | dict[str, "JSON"]


class AuditError(StreamprocError):
    """The audit log cannot be created, opened or appended to (or a detail value is refused)."""


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


# ---------------------------------------------------------------------------------------- sealing
def canonical(obj: Mapping[str, Any]) -> bytes:
    """The record's bytes on its line (without the newline): sorted keys, no spaces, UTF-8."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False).encode("utf-8")


def sha(data: bytes) -> str:
    """SHA-256 hex of ``data``."""
    return hashlib.sha256(data).hexdigest()


def mac(key: bytes, digest: str) -> str:
    """HMAC-SHA256 hex of a record's hash under the log's key."""
    return hmac.new(key, digest.encode("ascii"), hashlib.sha256).hexdigest()


def seal(key: bytes, body: dict[str, Any]) -> dict[str, Any]:
    """``body`` (every field but ``hash`` and ``mac``) with its hash and MAC added."""
    digest = sha(canonical(body))
    return {**body, "hash": digest, "mac": mac(key, digest)}


def check_link(key: bytes, obj: dict[str, Any], raw: bytes, expected_seq: int, expected_prev: str) -> list[str]:
    """What is wrong with one parsed record on its line ``raw``: seq order, chain link, hash, MAC, form."""
    found: list[str] = []
    seq = obj["seq"]
    if seq != expected_seq:
        kind = "records missing before it" if seq > expected_seq else "out of order or duplicated"
        found.append(f"seq {seq} where {expected_seq} was expected ({kind})")
    if obj["prev"] != expected_prev:
        what = "the chain's start" if expected_prev == GENESIS else "the previous line's hash"
        found.append(f"prev does not match {what} (a record was deleted, inserted or moved here)")
    body = {k: v for k, v in obj.items() if k not in ("hash", "mac")}
    if sha(canonical(body)) != obj["hash"]:
        found.append("content does not match its hash (the record was edited)")
    if not hmac.compare_digest(mac(key, obj["hash"]), obj["mac"]):
        found.append("MAC mismatch (record written without this log's key: forged or rewritten)")
    if canonical(obj) + b"\n" != raw:
        found.append("line is not in canonical form (edited by hand?)")
    return found


# ---------------------------------------------------------------------------------------- input
def check_entry(actor: str, action: str, details: Mapping[str, Any]) -> dict[str, JSON]:
    """Refuse a blank actor or a malformed action; return the details copied as plain JSON."""
    if not actor.strip():
        raise AuditError("audit records need an actor (operator identity)")
    if not _ACTION_RE.fullmatch(action):
        raise AuditError(f"audit action must match [a-z][a-z0-9_]*, not {action!r}")
    return _check_details(details)


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


# ---------------------------------------------------------------------------------------- parsing
def parse(raw: bytes) -> tuple[dict[str, Any], str] | tuple[None, str]:
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


def to_record(obj: Mapping[str, Any]) -> AuditRecord:
    """A parsed record's fields as an :class:`AuditRecord`."""
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
