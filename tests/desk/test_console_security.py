"""The review console's security, over real HTTP to a real uvicorn server: sessions, CSRF, escaping, image
access, lock-out, disabled accounts, the two-person rule by authenticated account, reopen, and the audit trail."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from desk_server import PASSWORD, add_accounts, csrf_of, running, sign_in, write_config
from support import make_event

from streamproc.config import load_pipeline_config
from streamproc.desk.sessions import LoginThrottle, SessionStore
from streamproc.feed.journal import EventJournal
from streamproc.govern.accounts import MAX_FAILURES, ReviewerStore, accounts_path
from streamproc.records.audit import AuditLog


class Desk:
    def __init__(self, root: Path, base: str, event_ids: list[str]) -> None:
        self.root = root
        self.base = base
        self.ids = event_ids
        self.config = root / "run.yaml"

    def audit(self) -> list[tuple[str, str, dict[str, object]]]:
        return [(r.actor, r.action, dict(r.details)) for r in AuditLog.open(self.root / "audit").records()]


@pytest.fixture
def desk(tmp_path: Path) -> Iterator[Desk]:
    journal = tmp_path / "events.sqlite"
    with EventJournal(journal) as j:
        stored = [j.append(make_event(track=t, subject=f"s-00{t}")) for t in (1, 2)]
    config = write_config(tmp_path, journal, tmp_path / "no-watchlist")
    add_accounts(load_pipeline_config(config))
    with running(config) as base:
        yield Desk(tmp_path, base, [e.event_id for e in stored if e is not None])


def test_nothing_is_served_without_a_session(desk: Desk) -> None:
    eid = desk.ids[0]
    with httpx.Client(base_url=desk.base) as anon:
        for page in ("/", f"/c/{eid}", "/?status=all"):
            r = anon.get(page)
            assert r.status_code == 303 and r.headers["location"].startswith("/login?next="), page
        for data in ("/queue/rows", f"/c/{eid}/probe.jpg", f"/c/{eid}/enrolled/0.jpg"):
            assert anon.get(data).status_code == 401, data
        assert anon.post(f"/c/{eid}", data={"decision": "confirm", "note": "x"}).status_code in (303, 403)
    with EventJournal(desk.root / "events.sqlite") as j:
        assert j.review_count() == 0


def test_every_post_needs_the_csrf_token(desk: Desk) -> None:
    eid = desk.ids[0]
    with httpx.Client(base_url=desk.base) as anon:
        anon.get("/login")
        assert anon.post("/login", data={"user": "alice", "password": PASSWORD}).status_code == 403
    alice = sign_in(desk.base, "alice")
    assert alice.post(f"/c/{eid}", data={"decision": "confirm", "note": "same"}).status_code == 403
    assert alice.post(f"/c/{eid}", data={"decision": "confirm", "note": "same", "csrf": "x" * 43}).status_code == 403
    assert alice.post("/logout").status_code == 403
    with EventJournal(desk.root / "events.sqlite") as j:
        assert j.review_count() == 0


def test_a_decision_is_the_signed_in_account_and_two_accounts_are_needed(desk: Desk) -> None:
    eid = desk.ids[0]
    alice, bob = sign_in(desk.base, "alice"), sign_in(desk.base, "bob")
    page = alice.get(f"/c/{eid}")
    assert page.status_code == 200 and "PENDING REVIEW: 0 of 2" in page.text
    form = {"decision": "confirm", "note": "same scar", "csrf": csrf_of(page.text), "reviewer": "mallory"}
    assert alice.post(f"/c/{eid}", data=form).status_code == 303
    again = alice.post(f"/c/{eid}", data=form)
    assert again.status_code == 409 and "alice already decided" in again.text
    assert 'id="decision"' not in alice.get(f"/c/{eid}").text  # no form for a second decision
    blank = bob.post(
        f"/c/{eid}", data={"decision": "confirm", "note": "  ", "csrf": csrf_of(bob.get(f"/c/{eid}").text)}
    )
    assert blank.status_code == 400 and "note is required" in blank.text
    done = bob.post(f"/c/{eid}", data={"decision": "confirm", "note": "agree", "csrf": csrf_of(blank.text)})
    assert done.status_code == 303
    assert "CONFIRMED by 2 reviewers: alice, bob" in bob.get(f"/c/{eid}").text
    with EventJournal(desk.root / "events.sqlite") as j:
        assert [(r.reviewer, r.status) for r in j.reviews_of(eid)] == [("alice", "pending"), ("bob", "confirmed")]
    reviews = [(actor, d["status"]) for actor, action, d in desk.audit() if action == "review"]
    assert reviews == [("alice", "pending"), ("bob", "confirmed")]
    views = [(actor, d["event_id"]) for actor, action, d in desk.audit() if action == "review_view"]
    assert ("alice", eid) in views and ("bob", eid) in views  # who looked at whose face


def test_a_note_is_shown_escaped(desk: Desk) -> None:
    eid = desk.ids[0]
    alice = sign_in(desk.base, "alice")
    note = '<script>alert("x")</script> & <img src=x onerror=alert(1)>'
    alice.post(f"/c/{eid}", data={"decision": "reject", "note": note, "csrf": csrf_of(alice.get(f"/c/{eid}").text)})
    page = alice.get(f"/c/{eid}").text
    assert "<script>alert" not in page and "<img src=x" not in page
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;img src=x onerror=alert(1)&gt;" in page
    assert "REJECTED by alice" in page


def test_images_only_for_a_viewed_candidate_and_no_path_tricks(desk: Desk) -> None:
    first, second = desk.ids
    alice = sign_in(desk.base, "alice")
    assert alice.get(f"/c/{first}/probe.jpg").status_code == 404  # not viewed yet: no unaudited face
    alice.get(f"/c/{first}")
    probe = alice.get(f"/c/{first}/probe.jpg")
    assert probe.status_code == 200 and probe.content.startswith(b"\xff\xd8\xff")
    assert probe.headers["cache-control"] == "no-store"
    for url in (
        f"/c/{second}/probe.jpg",
        f"/c/{'0' * 32}/probe.jpg",
        f"/c/{first}/enrolled/0.jpg",
        f"/c/{first}/enrolled/-1.jpg",
        f"/c/{first.upper()}/probe.jpg",
        f"/c/{first}/../{second}/probe.jpg",
        f"/c/{first}%2F..%2F{second}/probe.jpg",
        "/static/../app.py",
        "/static/%2e%2e/app.py",
        "/c/../../etc/passwd",
    ):
        assert alice.get(url).status_code == 404, url


def test_five_wrong_passwords_lock_the_account(desk: Desk) -> None:
    with httpx.Client(base_url=desk.base) as client:
        for _ in range(MAX_FAILURES):
            page = client.get("/login")
            r = client.post("/login", data={"user": "bob", "password": "wrong password!", "csrf": csrf_of(page.text)})
            assert r.status_code == 401
        assert "locked" in r.text
        page = client.get("/login")
        right = client.post("/login", data={"user": "bob", "password": PASSWORD, "csrf": csrf_of(page.text)})
        assert right.status_code == 401 and "locked" in right.text
    refused = [actor for actor, action, _ in desk.audit() if action == "review_login_refused"]
    assert refused.count("bob") == MAX_FAILURES + 1


def test_a_disabled_reviewers_session_stops_working(desk: Desk) -> None:
    alice = sign_in(desk.base, "alice")
    assert alice.get("/").status_code == 200
    with ReviewerStore.open(accounts_path(load_pipeline_config(desk.config))) as store:
        store.set_active("alice", False)
    assert alice.get("/").status_code == 303
    assert alice.get("/queue/rows").status_code == 401
    with httpx.Client(base_url=desk.base) as again:
        page = again.get("/login")
        r = again.post("/login", data={"user": "alice", "password": PASSWORD, "csrf": csrf_of(page.text)})
        assert r.status_code == 401 and "disabled" in r.text


def test_cookies_and_headers(desk: Desk) -> None:
    with httpx.Client(base_url=desk.base) as client:
        page = client.get("/login")
        r = client.post("/login", data={"user": "alice", "password": PASSWORD, "csrf": csrf_of(page.text)})
    cookie = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("desk_session="))
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and "Secure" not in cookie
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    assert page.headers["x-frame-options"] == "DENY"


def test_logout_ends_the_session(desk: Desk) -> None:
    alice = sign_in(desk.base, "alice")
    token = alice.cookies["desk_session"]
    assert alice.post("/logout", data={"csrf": csrf_of(alice.get("/").text)}).status_code == 303
    with httpx.Client(base_url=desk.base, cookies={"desk_session": token}) as stolen:
        assert stolen.get("/").status_code == 303


def test_only_a_supervisor_reopens_and_only_with_a_note(desk: Desk) -> None:
    eid = desk.ids[0]
    alice, sam = sign_in(desk.base, "alice"), sign_in(desk.base, "sam")
    alice.post(
        f"/c/{eid}", data={"decision": "reject", "note": "not him", "csrf": csrf_of(alice.get(f"/c/{eid}").text)}
    )
    csrf = csrf_of(alice.get(f"/c/{eid}").text)
    assert alice.post(f"/c/{eid}", data={"decision": "reopen", "note": "again", "csrf": csrf}).status_code == 403
    page = sam.get(f"/c/{eid}")
    assert 'id="reopen"' in page.text
    assert sam.post(f"/c/{eid}", data={"decision": "reopen", "note": "", "csrf": csrf_of(page.text)}).status_code == 400
    assert (
        sam.post(f"/c/{eid}", data={"decision": "reopen", "note": "new photo", "csrf": csrf_of(page.text)}).status_code
        == 303
    )
    again = alice.get(f"/c/{eid}").text
    assert "PENDING REVIEW: 0 of 2" in again and 'id="decision"' in again  # a new round: alice may decide again
    reopened = [(a, d["decision"]) for a, action, d in desk.audit() if action == "review"]
    assert reopened == [("alice", "reject"), ("sam", "reopen")]


def test_login_attempts_are_throttled_per_address() -> None:
    now = [0.0]
    throttle = LoginThrottle(lambda: now[0])
    assert all(throttle.allow("1.2.3.4") for _ in range(10))
    assert not throttle.allow("1.2.3.4") and throttle.allow("5.6.7.8")
    now[0] = 61.0
    assert throttle.allow("1.2.3.4")


def test_sessions_end_when_idle() -> None:
    now = [0.0]
    sessions = SessionStore(idle_timeout_s=900, clock=lambda: now[0])
    s = sessions.create("alice")
    now[0] = 899.0
    assert sessions.touch(s.token) is s
    now[0] = 899.0 + 901.0
    assert sessions.touch(s.token) is None
    assert sessions.touch(None) is None and sessions.touch("nope") is None


def test_behind_tls_the_session_cookie_is_secure(tmp_path: Path) -> None:
    journal = tmp_path / "events.sqlite"
    with EventJournal(journal) as j:
        j.append(make_event())
    config = write_config(tmp_path, journal, tmp_path / "wl", behind_tls=True)
    add_accounts(load_pipeline_config(config))
    with running(config) as base, httpx.Client(base_url=base) as client:
        page = client.get("/login")
        login_cookie = page.headers["set-cookie"]
        assert "Secure" in login_cookie and "HttpOnly" in login_cookie
        csrf = csrf_of(page.text)
        # httpx keeps Secure cookies away from plain http (as a browser would): this request carries none
        assert client.post("/login", data={"user": "alice", "password": PASSWORD, "csrf": csrf}).status_code == 403
        r = client.post(
            "/login",
            data={"user": "alice", "password": PASSWORD, "csrf": csrf},
            headers={"cookie": f"desk_login={csrf}"},  # as the TLS proxy would pass it on
        )
        assert r.status_code == 303
        session = next(v for k, v in r.headers.multi_items() if k == "set-cookie" and v.startswith("desk_session="))
        assert "Secure" in session and "HttpOnly" in session and "SameSite=strict" in session


def test_unknown_and_malformed_candidates_are_404(desk: Desk) -> None:
    alice = sign_in(desk.base, "alice")
    for url in (f"/c/{'0' * 32}", "/c/xyz", f"/c/{desk.ids[0]}x"):
        assert alice.get(url).status_code == 404, url
    csrf = csrf_of(alice.get("/").text)
    assert alice.post(f"/c/{'0' * 32}", data={"decision": "confirm", "note": "x", "csrf": csrf}).status_code == 404
    assert not [a for a in desk.audit() if a[1] == "review_view"]  # nothing viewed, nothing audited


def test_single_sign_on_header_mode(tmp_path: Path) -> None:
    journal = tmp_path / "events.sqlite"
    with EventJournal(journal) as j:
        event = j.append(make_event())
    assert event is not None
    config = write_config(tmp_path, journal, tmp_path / "wl")
    add_accounts(load_pipeline_config(config))
    eid = event.event_id
    with running(config, trusted_user_header="X-Remote-User") as base:
        with httpx.Client(base_url=base) as anon:
            assert anon.get("/").status_code == 303
            assert anon.get("/", headers={"x-remote-user": "mallory"}).status_code == 303  # no such account
            login = anon.get("/login")
            assert login.status_code == 401 and "single sign-on" in login.text and 'name="password"' not in login.text
            assert anon.post("/login", data={"user": "alice", "password": PASSWORD}).status_code == 403
        with httpx.Client(base_url=base, headers={"x-remote-user": "alice"}) as alice:
            page = alice.get(f"/c/{eid}")
            assert page.status_code == 200 and "desk_session" in alice.cookies
            assert alice.post(f"/c/{eid}", data={"decision": "confirm", "note": "same"}).status_code == 403  # CSRF
            done = alice.post(f"/c/{eid}", data={"decision": "confirm", "note": "same", "csrf": csrf_of(page.text)})
            assert done.status_code == 303
            # the proxy now names bob on the same browser: bob's own session, bob's decision
            alice.headers["x-remote-user"] = "bob"
            page = alice.get(f"/c/{eid}")
            assert "Bob Reviewer" in page.text
            done = alice.post(f"/c/{eid}", data={"decision": "confirm", "note": "agree", "csrf": csrf_of(page.text)})
            assert done.status_code == 303
    with EventJournal(journal) as j:
        assert [(r.reviewer, r.status) for r in j.reviews_of(eid)] == [("alice", "pending"), ("bob", "confirmed")]
    logins = [
        (r.actor, r.details.get("via"))
        for r in AuditLog.open(tmp_path / "audit").records()
        if r.action == "review_login"
    ]
    assert logins == [("alice", "X-Remote-User"), ("bob", "X-Remote-User")]
