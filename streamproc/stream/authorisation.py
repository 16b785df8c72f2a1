"""Use policy: live 1:N search on a body camera needs a legal authorisation, with a scope and an expiry.

Searching everyone a police officer's camera sees, live, against a watchlist is the most intrusive use of this
system, so it is off unless the configuration names the authority for it (``policy.authorisation``): a case or
warrant reference, what it covers, the streams it covers and when it expires. The check runs before any stream
starts; the result (or the refusal) goes into the audit log. Recorded footage (files, folders) and fixed cameras
are not live body-camera search and need no authorisation here (other rules may apply to them).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from fnmatch import fnmatchcase

from streamproc.config import PipelineConfig, SourceConfig
from streamproc.errors import ConfigError
from streamproc.stream.source import source_kind


class NotAuthorisedError(ConfigError):
    """The configuration asks for live body-camera search without a valid authorisation."""


@dataclass(frozen=True)
class AuthorisationCheck:
    """What the check found: the live body-camera streams, and the authorisation covering them (if any)."""

    live_body_camera: tuple[str, ...]
    reference: str | None
    expires: datetime | None

    def audit_details(self) -> dict[str, object]:
        return {
            "live_body_camera_streams": list(self.live_body_camera),
            "authorisation": self.reference,
            "authorisation_expires": self.expires.isoformat() if self.expires else None,
        }


def needs_authorisation(source: SourceConfig) -> bool:
    return source.camera == "body_camera" and source_kind(source.url) == "url"


def check_authorisation(config: PipelineConfig, now: datetime | None = None) -> AuthorisationCheck:
    """Raise :class:`NotAuthorisedError` (one line) unless every live body-camera stream is covered and in date."""
    now = now or datetime.now(UTC)
    live = tuple(s.id for s in config.sources if needs_authorisation(s))
    auth = config.policy.authorisation
    if not live:
        return AuthorisationCheck((), auth.reference if auth else None, auth.expires if auth else None)
    if auth is None:
        raise NotAuthorisedError(
            f"live 1:N search on body-camera stream(s) {', '.join(live)} needs policy.authorisation "
            "(reference, scope, streams, expires); set sources[].camera: fixed for fixed cameras"
        )
    if now >= auth.expires:
        raise NotAuthorisedError(
            f"policy.authorisation {auth.reference} expired at {auth.expires.isoformat()}: live body-camera "
            f"search on {', '.join(live)} is not authorised"
        )
    uncovered = [sid for sid in live if not any(fnmatchcase(sid, pattern) for pattern in auth.streams)]
    if uncovered:
        raise NotAuthorisedError(
            f"policy.authorisation {auth.reference} does not cover stream(s) {', '.join(uncovered)} "
            f"(its streams: {', '.join(auth.streams)})"
        )
    return AuthorisationCheck(live, auth.reference, auth.expires)
