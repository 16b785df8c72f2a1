"""The review console's web application (Starlette): sign-in, sessions, CSRF, security headers; pages in
:mod:`streamproc.desk.pages`.

Security model, in one place:

- Every page and image needs a live session (:mod:`streamproc.desk.sessions`); pages without one redirect to
  ``/login``, images and fragments answer 401. The account is re-read on every request, so disabling it ends
  its sessions at once.
- Every POST carries the session's CSRF token in a form field (the login form a pre-session token bound to a
  cookie); without it: 403. Cookies are HttpOnly and SameSite=Strict, Secure with ``review.behind_tls``.
- Passwords are checked by :class:`~streamproc.govern.accounts.ReviewerStore` (scrypt; lock-out after
  :data:`~streamproc.govern.accounts.MAX_FAILURES` wrong ones); each client address gets at most
  :data:`~streamproc.desk.sessions.LOGIN_ATTEMPTS` attempts a minute.
- Responses are never cached (faces, names) and may only load this site's own scripts, styles and images
  (Content-Security-Policy); the page cannot be framed.
- Sign-ins, refusals, sign-outs and every candidate page view are audited.
"""

from __future__ import annotations

import hmac
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import jinja2
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import HTMLResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from streamproc.config import PipelineConfig
from streamproc.desk.sessions import LoginThrottle, Session, SessionStore
from streamproc.feed.journal import EventJournal
from streamproc.govern.accounts import LoginRefusedError, Reviewer, ReviewerStore, accounts_path, audit_dir
from streamproc.govern.review import open_journal
from streamproc.records.audit import AuditLog

SESSION_COOKIE: Final = "desk_session"
NEW_SESSION: Final = "streamproc.desk.new_session"
"""Scope key: a session token made during this request, for :class:`SecurityHeaders` to set as the cookie."""
LOGIN_COOKIE: Final = "desk_login"
HERE: Final = Path(__file__).resolve().parent
SECURITY_HEADERS: Final = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self'; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'; object-src 'none'",
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}


class Desk:
    """Everything a request needs: the run's config, journal, accounts, sessions, audit log and templates."""

    def __init__(
        self,
        cfg: PipelineConfig,
        config_name: str,
        clock: Callable[[], float] = time.monotonic,
        trusted_user_header: str | None = None,
    ) -> None:
        self.cfg = cfg
        self.trusted_user_header = trusted_user_header
        self.journal: EventJournal = open_journal(cfg.events.journal.path, config_name)
        self.accounts = ReviewerStore.open(accounts_path(cfg))
        self.sessions = SessionStore(cfg.review.idle_timeout_min * 60.0, clock)
        self.throttle = LoginThrottle(clock)
        self.secure = cfg.review.behind_tls
        self._audit: AuditLog | None = None
        self.templates = jinja2.Environment(
            loader=jinja2.FileSystemLoader(HERE / "templates"), autoescape=True, undefined=jinja2.StrictUndefined
        )

    def audit(self, actor: str) -> AuditLog:
        """The run's audit log (created on first use with ``actor``: the pipeline may not have started yet)."""
        if self._audit is None:
            self._audit = AuditLog.open_or_create(audit_dir(self.cfg), self.cfg.audit.key, actor=actor)
        return self._audit

    def render(self, name: str, status: int = 200, **context: Any) -> HTMLResponse:
        return HTMLResponse(self.templates.get_template(name).render(**context), status_code=status)

    def close(self) -> None:
        self.journal.close()
        self.accounts.close()


def desk_of(request: Request) -> Desk:
    desk: Desk = request.app.state.desk
    return desk


def signed_in(request: Request) -> tuple[Reviewer, str] | None:
    """The request's account and CSRF token, if its session is live and the account enabled."""
    desk = desk_of(request)
    token = request.cookies.get(SESSION_COOKIE)
    session = desk.sessions.touch(token)
    if desk.trusted_user_header is not None:
        return _single_sign_on(request, desk, desk.trusted_user_header, session)
    if session is None or token is None:
        return None
    account = desk.accounts.active(session.reviewer_id)
    if account is None:
        desk.sessions.drop(token)
        return None
    request.state.session = session
    return account, session.csrf


def _single_sign_on(request: Request, desk: Desk, header: str, session: Session | None) -> tuple[Reviewer, str] | None:
    """Trusted-proxy mode: the account is the one the proxy names in ``header``; the console's own session (made
    here when missing or for another account, its cookie set by :class:`SecurityHeaders`) carries CSRF and views."""
    claimed = request.headers.get(header, "").strip()
    account = desk.accounts.active(claimed) if claimed else None
    if account is None:
        return None
    if session is None or session.reviewer_id != account.id:
        session = desk.sessions.create(account.id)
        request.scope[NEW_SESSION] = session.token
        desk.audit(account.id).append(account.id, "review_login", details={"role": account.role, "via": header})
    request.state.session = session
    return account, session.csrf


def csrf_ok(given: object, expected: str) -> bool:
    return isinstance(given, str) and bool(given) and hmac.compare_digest(given.encode(), expected.encode())


def client_of(request: Request) -> str:
    return request.client.host if request.client else "unknown"


def set_cookie(desk: Desk, response: Response, name: str, value: str, max_age: int | None = None) -> None:
    response.set_cookie(name, value, max_age=max_age, httponly=True, samesite="strict", secure=desk.secure, path="/")


# --------------------------------------------------------------------------------------------- sign-in
async def login_page(request: Request) -> Response:
    desk = desk_of(request)
    if signed_in(request) is not None:
        return RedirectResponse("/", status_code=303)
    if desk.trusted_user_header is not None:
        error = "Reviewers sign in through the single sign-on proxy; this request named no enabled reviewer account."
        return desk.render("login.html", 401, error=error, csrf="", next="/", user=None, sso=True)
    return _login_form(desk, request, "", 200)


def _login_form(desk: Desk, request: Request, error: str, status: int) -> Response:
    token = secrets.token_urlsafe(32)
    nxt = request.query_params.get("next", "/")
    response = desk.render("login.html", status, error=error, csrf=token, next=_safe_next(nxt), user=None, sso=False)
    set_cookie(desk, response, LOGIN_COOKIE, token, max_age=1800)
    return response


def _safe_next(target: str) -> str:
    """Only local paths (no //host, no scheme): a login link cannot send the reviewer elsewhere."""
    return target if target.startswith("/") and not target.startswith("//") and "\\" not in target else "/"


async def login_submit(request: Request) -> Response:
    desk = desk_of(request)
    form = await request.form()
    if desk.trusted_user_header is not None:
        return Response("sign-in is by the single sign-on proxy here", status_code=403)
    if not csrf_ok(form.get("csrf"), request.cookies.get(LOGIN_COOKIE, "")):
        return Response("CSRF token missing or wrong: reload the sign-in page", status_code=403)
    if not desk.throttle.allow(client_of(request)):
        return _login_form(desk, request, "Too many sign-in attempts from here; wait a minute.", 429)
    user, password = str(form.get("user", "")).strip(), str(form.get("password", ""))
    try:
        account = await run_in_threadpool(desk.accounts.authenticate, user, password)
    except LoginRefusedError as refused:
        if desk.accounts.get(user) is not None:
            await run_in_threadpool(
                desk.audit(user).append, user, "review_login_refused", details={"reason": str(refused)}
            )
        return _login_form(desk, request, str(refused), 401)
    session = desk.sessions.create(account.id)
    await run_in_threadpool(desk.audit(account.id).append, account.id, "review_login", details={"role": account.role})
    response = RedirectResponse(_safe_next(str(form.get("next", "/"))), status_code=303)
    set_cookie(desk, response, SESSION_COOKIE, session.token)
    response.delete_cookie(LOGIN_COOKIE, path="/")
    return response


async def logout(request: Request) -> Response:
    desk = desk_of(request)
    who = signed_in(request)
    form = await request.form()
    if who is None:
        return RedirectResponse("/login", status_code=303)
    account, csrf = who
    if not csrf_ok(form.get("csrf"), csrf):
        return Response("CSRF token missing or wrong", status_code=403)
    desk.sessions.drop(request.cookies.get(SESSION_COOKIE, ""))
    await run_in_threadpool(desk.audit(account.id).append, account.id, "review_logout")
    response = RedirectResponse("/login", status_code=303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


def login_redirect(request: Request) -> Response:
    target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return RedirectResponse(f"/login?next={quote(target, safe='')}", status_code=303)


class SecurityHeaders(BaseHTTPMiddleware):
    async def dispatch(self, request: Request, call_next: Callable[[Request], Awaitable[Response]]) -> Response:
        response = await call_next(request)
        for name, value in SECURITY_HEADERS.items():
            response.headers.setdefault(name, value)
        token = request.scope.get(NEW_SESSION)
        if isinstance(token, str):
            set_cookie(desk_of(request), response, SESSION_COOKIE, token)
        return response


def build_app(
    cfg: PipelineConfig,
    config_name: str,
    clock: Callable[[], float] = time.monotonic,
    trusted_user_header: str | None = None,
) -> Starlette:
    """The console for one run's journal, accounts and audit log; ``clock`` times idle sessions and throttling.

    ``trusted_user_header`` (e.g. ``X-Remote-User``): a single-sign-on proxy in front names the signed-in
    reviewer in that header and the console's own sign-in is not used. Safe only when nothing but the proxy can
    reach the console (``review serve`` then insists on a loopback address)."""
    from streamproc.desk import pages

    desk = Desk(cfg, config_name, clock, trusted_user_header)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        yield
        desk.close()

    routes = [
        Route("/login", login_page, methods=["GET"]),
        Route("/login", login_submit, methods=["POST"]),
        Route("/logout", logout, methods=["POST"]),
        *pages.routes(),
        Mount("/static", app=StaticFiles(directory=HERE / "static"), name="static"),
    ]
    app = Starlette(routes=routes, middleware=[Middleware(SecurityHeaders)], lifespan=lifespan)
    app.state.desk = desk
    return app


__all__ = ["SESSION_COOKIE", "Desk", "build_app", "csrf_ok", "desk_of", "login_redirect", "signed_in"]
