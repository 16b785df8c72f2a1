"""Reviewer accounts: who may decide on a candidate, proven by a password or a per-reviewer key, never a typed name.

Accounts live in one SQLite file (``review.accounts``; by default ``reviewers.sqlite`` in the audit directory),
created with mode 0600. Each row: id, display name, role (``reviewer`` or ``supervisor``), an scrypt password hash
(memory-hard; parameters stored with the hash so they can be raised later), the sha256 of an optional random key
(256 bits, so a fast hash is enough) for scripted desks, active flag, and the failed-login counter.

Lock-out: :data:`MAX_FAILURES` wrong passwords in a row lock the account for :data:`LOCK_S` seconds; even the right
password is refused while locked, and ``enable`` (an administrator) clears the lock. A disabled account can
neither log in nor use its key, and the web desk checks the account on every request, so disabling it ends its
sessions too. Unknown ids cost the same scrypt work as known ones, so timing does not say which ids exist.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import hmac
import os
import re
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Self, cast

from streamproc.config import PipelineConfig
from streamproc.errors import StreamprocError
from streamproc.feed.schema import REVIEWER_PATTERN

Role = Literal["reviewer", "supervisor"]
ROLES: Final = ("reviewer", "supervisor")
ACCOUNTS_FILE: Final = "reviewers.sqlite"
MAX_FAILURES: Final = 5
LOCK_S: Final = 900.0
MIN_PASSWORD: Final = 12
KEY_PREFIX: Final = "streamproc-reviewer-key-v1"

_SCRYPT_N: Final = 2**15
_SCRYPT_R: Final = 8
_SCRYPT_P: Final = 1
_SCRYPT_MAXMEM: Final = 128 * 1024 * 1024
_ID_RE: Final = re.compile(REVIEWER_PATTERN)
_SCHEMA: Final = """CREATE TABLE IF NOT EXISTS reviewers (
    id TEXT PRIMARY KEY,
    display_name TEXT NOT NULL,
    role TEXT NOT NULL,
    password_hash TEXT NOT NULL,
    key_hash TEXT,
    active INTEGER NOT NULL,
    created_at REAL NOT NULL,
    failures INTEGER NOT NULL DEFAULT 0,
    locked_until REAL NOT NULL DEFAULT 0
)"""
_SELECT: Final = (
    "SELECT id, display_name, role, active, created_at, failures, locked_until, key_hash IS NOT NULL FROM reviewers"
)


def audit_dir(cfg: PipelineConfig) -> Path:
    """Where ``streamproc run`` keeps the audit log: ``audit.dir``, else the watchlist directory."""
    return cfg.audit.dir or cfg.watchlist.path


def accounts_path(cfg: PipelineConfig) -> Path:
    """The run's reviewer accounts file: ``review.accounts``, else ``reviewers.sqlite`` in the audit directory."""
    return cfg.review.accounts or audit_dir(cfg) / ACCOUNTS_FILE


class AccountError(StreamprocError):
    """A malformed account request (bad id, weak password, unknown account, no accounts file): a usage error."""


class LoginRefusedError(AccountError):
    """Credentials not accepted. The message never says whether the id exists."""


@dataclass(frozen=True)
class Reviewer:
    """An account as stored (no secrets)."""

    id: str
    display_name: str
    role: Role
    active: bool
    created_at: float
    failures: int
    locked_until: float
    has_key: bool

    @property
    def is_supervisor(self) -> bool:
        return self.role == "supervisor"

    def locked(self, now: float) -> bool:
        return self.locked_until > now


def hash_password(password: str) -> str:
    """``scrypt$N$r$p$salt_hex$hash_hex`` of ``password`` with a fresh 16-byte salt."""
    salt = secrets.token_bytes(16)
    digest = _scrypt(password, salt, _SCRYPT_N, _SCRYPT_R, _SCRYPT_P)
    return f"scrypt${_SCRYPT_N}${_SCRYPT_R}${_SCRYPT_P}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """True when ``password`` matches ``stored`` (constant-time compare); False for a malformed hash."""
    parts = stored.split("$")
    if len(parts) != 6 or parts[0] != "scrypt":
        return False
    n, r, p = (int(v) for v in parts[1:4])
    digest = _scrypt(password, bytes.fromhex(parts[4]), n, r, p)
    return hmac.compare_digest(digest, bytes.fromhex(parts[5]))


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int) -> bytes:
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, maxmem=_SCRYPT_MAXMEM, dklen=32)


_DUMMY_HASH: Final = "scrypt$32768$8$1$" + "00" * 16 + "$" + "00" * 32


def check_new_account(reviewer_id: str, display_name: str, role: str, password: str) -> None:
    """Refuse a malformed account before anything is opened for writing."""
    if not _ID_RE.fullmatch(reviewer_id):
        raise AccountError(
            f"reviewer id {reviewer_id[:70]!r} must be 1-64 of A-Z a-z 0-9 _ . @ + - (starting with a letter or digit)"
        )
    if not display_name.strip() or len(display_name) > 200:
        raise AccountError("a display name of 1-200 characters is required")
    if role not in ROLES:
        raise AccountError(f"role must be reviewer or supervisor, not {role!r}")
    check_password(password)


def check_password(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise AccountError(f"the password must have at least {MIN_PASSWORD} characters")
    if len(password) > 1024:
        raise AccountError("the password must have at most 1024 characters")


class ReviewerStore:
    """The accounts file. Thread-safe (one connection behind a lock); every write is one transaction."""

    def __init__(self, path: Path, conn: sqlite3.Connection, clock: Callable[[], float] = time.time) -> None:
        self.path = path
        self._conn = conn
        self._lock = threading.Lock()
        self._clock = clock

    @classmethod
    def open(cls, path: Path, *, create: bool = False, clock: Callable[[], float] = time.time) -> Self:
        """Open the accounts file; with ``create`` make it (mode 0600) when missing, else refuse."""
        if not path.is_file():
            if not create:
                raise AccountError(f"no reviewer accounts at {path}; add one with `streamproc review reviewers add`")
            path.parent.mkdir(parents=True, exist_ok=True)
            os.close(os.open(path, os.O_CREAT | os.O_WRONLY, 0o600))
        try:
            conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None, timeout=10)
            conn.execute(_SCHEMA)
        except sqlite3.Error as err:
            raise AccountError(f"reviewer accounts {path}: {err}") from None
        return cls(path, conn, clock)

    @contextlib.contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    # ----------------------------------------------------------------------------------------- admin
    def add(self, reviewer_id: str, display_name: str, role: Role, password: str) -> Reviewer:
        check_new_account(reviewer_id, display_name, role, password)
        hashed = hash_password(password)
        with self._tx() as db:
            if db.execute("SELECT 1 FROM reviewers WHERE id = ?", (reviewer_id,)).fetchone():
                raise AccountError(f"reviewer {reviewer_id} already exists (ids are never reused)")
            db.execute(
                "INSERT INTO reviewers(id, display_name, role, password_hash, active, created_at) "
                "VALUES (?, ?, ?, ?, 1, ?)",
                (reviewer_id, display_name.strip(), role, hashed, self._clock()),
            )
        return self.require(reviewer_id)

    def set_active(self, reviewer_id: str, active: bool) -> Reviewer:
        """Disable (sessions and key stop working at once) or enable (also clears a lock-out)."""
        with self._tx() as db:
            found = db.execute(
                "UPDATE reviewers SET active = ?, failures = 0, locked_until = 0 WHERE id = ?",
                (int(active), reviewer_id),
            ).rowcount
        if not found:
            raise AccountError(f"no reviewer {reviewer_id!r}")
        return self.require(reviewer_id)

    def set_password(self, reviewer_id: str, password: str) -> None:
        check_password(password)
        hashed = hash_password(password)
        with self._tx() as db:
            if not db.execute("UPDATE reviewers SET password_hash = ? WHERE id = ?", (hashed, reviewer_id)).rowcount:
                raise AccountError(f"no reviewer {reviewer_id!r}")

    def issue_key(self, reviewer_id: str) -> str:
        """A new key file's text for ``reviewer_id`` (the previous key stops working); only its sha256 is kept."""
        token = secrets.token_hex(32)
        with self._tx() as db:
            found = db.execute("UPDATE reviewers SET key_hash = ? WHERE id = ?", (_sha(token), reviewer_id)).rowcount
        if not found:
            raise AccountError(f"no reviewer {reviewer_id!r}")
        return f"{KEY_PREFIX} {reviewer_id} {token}\n"

    # ---------------------------------------------------------------------------------------- reading
    def get(self, reviewer_id: str) -> Reviewer | None:
        with self._lock:
            row = self._conn.execute(_SELECT + " WHERE id = ?", (reviewer_id,)).fetchone()
        return None if row is None else _reviewer(row)

    def require(self, reviewer_id: str) -> Reviewer:
        found = self.get(reviewer_id)
        if found is None:
            raise AccountError(f"no reviewer {reviewer_id!r}")
        return found

    def all(self) -> list[Reviewer]:
        with self._lock:
            rows = self._conn.execute(_SELECT + " ORDER BY id").fetchall()
        return [_reviewer(r) for r in rows]

    def active(self, reviewer_id: str) -> Reviewer | None:
        """The account if it exists and is enabled: what a session re-checks on every request."""
        found = self.get(reviewer_id)
        return found if found is not None and found.active else None

    # ------------------------------------------------------------------------------------ authenticate
    def authenticate(self, reviewer_id: str, password: str) -> Reviewer:
        """The account, if the password is right and the account enabled and not locked; else
        :class:`LoginRefusedError` (a wrong password counts towards the lock-out)."""
        now = self._clock()
        with self._lock:
            row = self._conn.execute("SELECT password_hash FROM reviewers WHERE id = ?", (reviewer_id,)).fetchone()
        stored = str(row[0]) if row else _DUMMY_HASH
        good = verify_password(password, stored) and row is not None
        # The failure count must be committed even though the login is refused, so the refusal is raised only
        # after the transaction (an exception inside it would roll the count back).
        with self._tx() as db:
            current = db.execute(_SELECT + " WHERE id = ?", (reviewer_id,)).fetchone()
            account = None if current is None else _reviewer(current)
            refusal = _refusal(account, good, now)
            if account is not None and refusal is None:
                db.execute("UPDATE reviewers SET failures = 0 WHERE id = ?", (reviewer_id,))
                account = dataclasses.replace(account, failures=0)
            elif account is not None and not good and not account.locked(now):
                failures = account.failures + 1
                locked_until = now + LOCK_S if failures >= MAX_FAILURES else 0.0
                db.execute(
                    "UPDATE reviewers SET failures = ?, locked_until = ? WHERE id = ?",
                    (0 if locked_until else failures, locked_until, reviewer_id),
                )
                if locked_until:
                    refusal = (
                        f"wrong reviewer id or password; after {MAX_FAILURES} in a row the account is locked for "
                        f"{LOCK_S / 60:.0f} minutes"
                    )
        if refusal is not None or account is None:
            raise LoginRefusedError(refusal or "wrong reviewer id or password")
        return account

    def authenticate_key(self, key_text: str) -> Reviewer:
        """The account a key file's text names, if its token matches and the account is enabled."""
        parts = key_text.split()
        if len(parts) != 3 or parts[0] != KEY_PREFIX:
            raise AccountError(f"not a reviewer key file (it should start with {KEY_PREFIX})")
        reviewer_id, token = parts[1], parts[2]
        with self._lock:
            row = self._conn.execute("SELECT key_hash FROM reviewers WHERE id = ?", (reviewer_id,)).fetchone()
        if row is None or row[0] is None or not hmac.compare_digest(str(row[0]), _sha(token)):
            raise LoginRefusedError("the reviewer key is not valid (revoked, replaced, or not issued here)")
        account = self.require(reviewer_id)
        if not account.active:
            raise LoginRefusedError(f"reviewer {reviewer_id} is disabled")
        return account

    def close(self) -> None:
        with self._lock:
            self._conn.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _refusal(account: Reviewer | None, good: bool, now: float) -> str | None:
    """Why a login is refused (None: accepted). A lock is reported even for the right password."""
    if account is None:
        return "wrong reviewer id or password"
    if account.locked(now):
        return _locked_message(account, now)
    if not good:
        return "wrong reviewer id or password"
    if not account.active:
        return f"reviewer {account.id} is disabled"
    return None


def _locked_message(account: Reviewer, now: float) -> str:
    minutes = max(1, round((account.locked_until - now) / 60))
    return f"account {account.id} is locked after {MAX_FAILURES} wrong passwords; try again in {minutes} min"


def _sha(token: str) -> str:
    return hashlib.sha256(token.encode("ascii", errors="replace")).hexdigest()


def _reviewer(row: tuple[object, ...]) -> Reviewer:
    return Reviewer(
        id=str(row[0]),
        display_name=str(row[1]),
        role=cast(Role, row[2]),
        active=bool(row[3]),
        created_at=float(cast(float, row[4])),
        failures=int(cast(int, row[5])),
        locked_until=float(cast(float, row[6])),
        has_key=bool(row[7]),
    )


__all__ = [
    "ACCOUNTS_FILE",
    "LOCK_S",
    "MAX_FAILURES",
    "ROLES",
    "AccountError",
    "LoginRefusedError",
    "Reviewer",
    "ReviewerStore",
    "Role",
    "accounts_path",
    "audit_dir",
    "check_new_account",
    "hash_password",
    "verify_password",
]
