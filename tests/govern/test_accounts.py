"""Reviewer accounts (real SQLite file, real scrypt) and the reopen rule."""

from __future__ import annotations

from pathlib import Path

import pytest
from support import make_event

from streamproc.feed.journal import EventJournal
from streamproc.feed.schema import ReviewEvent
from streamproc.govern.accounts import (
    LOCK_S,
    MAX_FAILURES,
    AccountError,
    LoginRefusedError,
    ReviewerStore,
    hash_password,
    verify_password,
)
from streamproc.govern.review import ReviewRefusedError, decide, reopen
from streamproc.records.audit import AuditLog

PASSWORD = "correct horse battery"


def test_passwords_are_salted_scrypt_hashes() -> None:
    a, b = hash_password(PASSWORD), hash_password(PASSWORD)
    assert a != b and a.startswith("scrypt$32768$8$1$") and PASSWORD not in a
    assert verify_password(PASSWORD, a) and not verify_password(PASSWORD + "x", a)
    assert not verify_password(PASSWORD, "md5$abc")


def test_lock_out_after_wrong_passwords_and_enable_clears_it(tmp_path: Path) -> None:
    now = [1000.0]
    with ReviewerStore.open(tmp_path / "r.sqlite", create=True, clock=lambda: now[0]) as store:
        store.add("alice", "Alice", "reviewer", PASSWORD)
        assert store.authenticate("alice", PASSWORD).id == "alice"
        for _ in range(MAX_FAILURES - 1):
            with pytest.raises(LoginRefusedError, match="wrong reviewer id or password"):
                store.authenticate("alice", "nope nope nope")
        assert store.authenticate("alice", PASSWORD).failures == 0  # a success resets the count
        for _ in range(MAX_FAILURES):
            with pytest.raises(LoginRefusedError):
                store.authenticate("alice", "nope nope nope")
        with pytest.raises(LoginRefusedError, match="locked"):
            store.authenticate("alice", PASSWORD)
        now[0] += LOCK_S + 1
        assert store.authenticate("alice", PASSWORD).id == "alice"
        for _ in range(MAX_FAILURES):
            with pytest.raises(LoginRefusedError):
                store.authenticate("alice", "nope nope nope")
        store.set_active("alice", True)
        assert store.authenticate("alice", PASSWORD).id == "alice"
        with pytest.raises(LoginRefusedError, match="wrong reviewer id or password"):
            store.authenticate("nobody", PASSWORD)


def test_keys_disabled_accounts_and_bad_input(tmp_path: Path) -> None:
    with pytest.raises(AccountError, match="reviewers add"):
        ReviewerStore.open(tmp_path / "missing.sqlite")
    with ReviewerStore.open(tmp_path / "r.sqlite", create=True) as store:
        store.add("bob", "Bob", "reviewer", PASSWORD)
        first = store.issue_key("bob")
        assert store.authenticate_key(first).id == "bob"
        second = store.issue_key("bob")
        with pytest.raises(LoginRefusedError):
            store.authenticate_key(first)  # replaced
        with pytest.raises(AccountError, match="not a reviewer key"):
            store.authenticate_key("hello")
        store.set_active("bob", False)
        with pytest.raises(LoginRefusedError, match="disabled"):
            store.authenticate_key(second)
        with pytest.raises(LoginRefusedError, match="disabled"):
            store.authenticate("bob", PASSWORD)
        for rid, name, role, pw, fragment in (
            ("bad id", "X", "reviewer", PASSWORD, "reviewer id"),
            ("x", " ", "reviewer", PASSWORD, "display name"),
            ("x", "X", "admin", PASSWORD, "role"),
            ("x", "X", "reviewer", "short", "at least 12"),
            ("bob", "B", "reviewer", PASSWORD, "already exists"),
        ):
            with pytest.raises(AccountError, match=fragment):
                store.add(rid, name, role, pw)  # type: ignore[arg-type]  # bad roles are part of the test
        assert [a.id for a in store.all()] == ["bob"]


def test_reopen_starts_a_new_round(tmp_path: Path) -> None:
    with EventJournal(tmp_path / "j.sqlite") as journal, ReviewerStore.open(tmp_path / "r", create=True) as store:
        event = journal.append(make_event())
        assert event is not None
        audit = AuditLog.create(tmp_path / "audit", actor="test")
        alice = store.add("alice", "Alice", "reviewer", PASSWORD)
        sam = store.add("sam", "Sam", "supervisor", PASSWORD)
        eid = event.event_id
        with pytest.raises(ReviewRefusedError, match="pending"):
            reopen(journal, audit, eid, sam, "why", required=2)
        decide(journal, audit, eid, "reject", "alice", "not him", required=2)
        with pytest.raises(ReviewRefusedError, match="only a supervisor"):
            reopen(journal, audit, eid, alice, "please", required=2)
        reopened = reopen(journal, audit, eid, sam, "new evidence", required=2)
        assert (reopened.decision, reopened.status, reopened.confirmations) == ("reopen", "pending", ())
        assert ReviewEvent.model_validate_json(reopened.model_dump_json()) == reopened
        assert decide(journal, audit, eid, "confirm", "alice", "on a second look", required=2).status == "pending"
        with pytest.raises(ReviewRefusedError, match="already decided"):
            decide(journal, audit, eid, "confirm", "alice", "again", required=2)
        assert decide(journal, audit, eid, "confirm", "sam", "agree", required=2).status == "confirmed"
        assert [r.details["decision"] for r in audit.records() if r.action == "review"] == [
            "reject",
            "reopen",
            "confirm",
            "confirm",
        ]
