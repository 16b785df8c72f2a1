"""CURVE encryption and client authentication for ZeroMQ sockets (the event feed, the replay server, ...).

The feed carries names and face images, so off loopback it must be encrypted and only known consumers may read
it. ZeroMQ's CURVE mechanism gives both: every socket has a keypair; a client must know the server's public key
(so it cannot be fooled by another server), and the server accepts only clients whose public key is in its
allowed-clients directory (checked by a ZAP handler, :class:`Authenticator`).

Keys live in ZeroMQ's standard certificate files (``zmq.auth``): ``<name>.key`` holds the public key and may be
shared; ``<name>.key_secret`` holds both keys and must stay private (mode 0600). Give the server's ``.key`` to
each client; copy each client's ``.key`` into the server's allowed-clients directory.

Typical server::

    auth = Authenticator(ctx, security.allowed_clients_dir)   # once per context, before binding
    sock = ctx.socket(zmq.ROUTER)
    secure_server(sock, security)                              # before bind
    sock.bind(endpoint)

Typical client: ``secure_client(sock, security)`` before ``connect``. A rejected client sees no error, only
silence: ZeroMQ reports a failed handshake to a socket monitor, never to ``recv``.
"""

from __future__ import annotations

import errno
import logging
import os
import re
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Final, Self

import zmq
import zmq.auth
from zmq.auth.thread import ThreadAuthenticator
from zmq.utils import z85

from streamproc.errors import StreamprocError

log = logging.getLogger(__name__)

PUBLIC_SUFFIX: Final = ".key"
SECRET_SUFFIX: Final = ".key_secret"  # noqa: S105 - a file suffix, not a secret
ZAP_DOMAIN: Final = "streamproc"
"""ZAP domain of the sockets :func:`secure_server` sets up; the :class:`Authenticator` admits clients in it."""
_NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_Z85_KEY_LEN = 40  # a 32-byte CURVE key in Z85


class SecurityError(StreamprocError):
    """A key file or allowed-clients directory is missing, malformed or unsafe, or CURVE cannot be set up."""


@dataclass(frozen=True)
class ServerSecurity:
    """What a server socket needs: its own keypair and the public keys of the clients it lets in."""

    secret_key_file: Path
    """The server's ``.key_secret`` file (its public key is in it too)."""
    allowed_clients_dir: Path
    """Directory of allowed clients' public ``.key`` files; any other client is refused."""


@dataclass(frozen=True)
class ClientSecurity:
    """What a client socket needs: its own keypair and the public key of the server it trusts."""

    secret_key_file: Path
    """The client's ``.key_secret`` file; its ``.key`` must be in the server's allowed-clients directory."""
    server_public_key_file: Path
    """The server's public ``.key`` file: the client refuses any server without the matching secret key."""


def _require_curve() -> None:
    if not zmq.has("curve"):
        raise SecurityError("this ZeroMQ build has no CURVE support (libzmq built without libsodium/tweetnacl)")


def _valid_key(key: bytes) -> bool:
    if len(key) != _Z85_KEY_LEN:
        return False
    try:
        z85.decode(key)
    except (ValueError, KeyError):
        return False
    return True


def _load_certificate(path: Path) -> tuple[bytes, bytes | None]:
    """(public, secret or None) from a certificate file, with one-line errors that name the file."""
    try:
        public, secret = zmq.auth.load_certificate(path)
    except OSError as err:
        raise SecurityError(f"cannot read key file {path}: {err.strerror or 'not found'}") from None
    except ValueError:
        raise SecurityError(f"key file {path} is not a ZeroMQ certificate: no public-key line") from None
    if not _valid_key(public):
        raise SecurityError(f"key file {path}: public-key is not a 40-character Z85 CURVE key")
    if secret is not None and not _valid_key(secret):
        raise SecurityError(f"key file {path}: secret-key is not a 40-character Z85 CURVE key")
    return public, secret


def load_keypair(path: Path) -> tuple[bytes, bytes]:
    """(public, secret) Z85 keys from a ``.key_secret`` file, checked to belong together."""
    public, secret = _load_certificate(path)
    if secret is None:
        raise SecurityError(f"key file {path} has no secret key: give the {SECRET_SUFFIX} file, not the public one")
    if zmq.curve_public(secret) != public:
        raise SecurityError(f"key file {path}: its public key does not belong to its secret key")
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        # Warn rather than refuse: deployments copy keys with tools that reset modes, and refusing to start a
        # camera pipeline over a mode bit helps nobody; the operator sees the warning.
        log.warning("secret key file %s is readable by other users (mode %o); chmod 600 it", path, mode & 0o777)
    return public, secret


def load_public_key(path: Path) -> bytes:
    """The Z85 public key from a ``.key`` (or ``.key_secret``) file."""
    return _load_certificate(path)[0]


def generate_keypair(directory: Path, name: str) -> tuple[Path, Path]:
    """Write ``<name>.key`` (public) and ``<name>.key_secret`` (secret, mode 0600) into ``directory``.

    Refuses to overwrite either file: replacing a key silently locks out every peer that trusts the old one. The
    files are written in a private temporary directory and hard-linked into place, so the secret is never
    readable by others, not even for a moment, and two concurrent runs cannot both win.
    """
    _require_curve()
    if not _NAME_PATTERN.match(name):
        raise SecurityError(f"key name {name!r} must be 1-64 characters of letters, digits, '_', '.', '-'")
    public_path = directory / f"{name}{PUBLIC_SUFFIX}"
    secret_path = directory / f"{name}{SECRET_SUFFIX}"
    for path in (public_path, secret_path):
        if path.exists() or path.is_symlink():
            raise SecurityError(f"key file {path} already exists; refusing to overwrite it (choose another name)")
    try:
        directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=directory, prefix=f".{name}.") as tmp:  # created mode 0700
            tmp_public, tmp_secret = (Path(p) for p in zmq.auth.create_certificates(tmp, name))
            tmp_secret.chmod(0o600)
            tmp_public.chmod(0o644)
            os.link(tmp_secret, secret_path)
            try:
                os.link(tmp_public, public_path)
            except BaseException:
                secret_path.unlink()
                raise
    except FileExistsError as err:
        raise SecurityError(f"key file {err.filename} already exists; refusing to overwrite it") from None
    except OSError as err:
        raise SecurityError(f"cannot write keys into {directory}: {err.strerror or err}") from None
    return public_path, secret_path


def allowed_client_keys(directory: Path) -> frozenset[bytes]:
    """The Z85 public keys in ``directory``'s ``*.key`` files; every file must parse (a typo must not go unseen)."""
    if not directory.is_dir():
        raise SecurityError(f"allowed-clients directory {directory} does not exist or is not a directory")
    keys = frozenset(load_public_key(path) for path in sorted(directory.glob(f"*{PUBLIC_SUFFIX}")))
    stray = sorted(directory.glob(f"*{SECRET_SUFFIX}"))
    if stray:
        log.warning(
            "allowed-clients directory %s holds secret key files (%s): clients need only give their public %s",
            directory,
            ", ".join(p.name for p in stray),
            PUBLIC_SUFFIX,
        )
    if not keys:
        log.warning("allowed-clients directory %s has no %s files: every client will be refused", directory, "*.key")
    return keys


class Authenticator:
    """The ZAP handler that admits only allowed clients' keys, running in a background thread.

    ZAP handlers bind the fixed address ``inproc://zeromq.zap.01`` in their context, so there is exactly one per
    ``zmq.Context`` and it serves every CURVE server socket of that context (the event PUB, a replay ROUTER,
    ...): start one before binding them, share it, and :meth:`close` it after closing them and before
    ``context.term()`` (which otherwise waits for it forever).
    """

    def __init__(self, context: zmq.SyncContext, allowed_clients_dir: Path) -> None:
        _require_curve()
        self.context = context
        self.allowed_clients_dir = allowed_clients_dir
        self.allowed_keys = allowed_client_keys(allowed_clients_dir)
        self._auth = ThreadAuthenticator(context, log=logging.getLogger(f"{__name__}.zap"))
        try:
            self._auth.start()
        except zmq.ZMQError as err:
            self._auth.stop()
            if err.errno == errno.EADDRINUSE:
                raise SecurityError(
                    "this ZeroMQ context already has a ZAP authenticator: share that Authenticator between the "
                    "context's server sockets"
                ) from None
            raise SecurityError(f"cannot start the ZAP authenticator: {err.strerror}") from None
        self._closed = False
        self.reload()

    def reload(self) -> None:
        """Re-read the allowed-clients directory: call after adding or removing a client's key file."""
        keys = allowed_client_keys(self.allowed_clients_dir)
        # "*" serves CURVE servers set up without a domain; ZAP_DOMAIN those set up by secure_server.
        for domain in ("*", ZAP_DOMAIN):
            self._auth.configure_curve(domain=domain, location=self.allowed_clients_dir)
            # configure_curve only logs a failure to read the directory; make sure it took what we checked.
            if set(self._auth.certs.get(domain, {})) != keys:
                raise SecurityError(f"the ZAP authenticator could not load the keys in {self.allowed_clients_dir}")
        self.allowed_keys = keys

    def close(self) -> None:
        """Stop the handler thread; afterwards the context's CURVE servers refuse every client."""
        if self._closed:
            return
        self._closed = True
        self._auth.stop()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def secure_server(socket: zmq.SyncSocket, security: ServerSecurity) -> None:
    """Make ``socket`` (PUB, ROUTER, REP, ...) a CURVE server; call before ``bind``.

    Fails closed: the socket gets ZAP domain :data:`ZAP_DOMAIN` with ZAP enforced, so without a running
    :class:`Authenticator` on its context every client is refused. libzmq's default would admit any client that
    knows the server's public key; and enforcing ZAP with an *empty* domain (libzmq 4.3.5, non-draft build)
    skips ZAP altogether, admitting every key, which is why the domain is always set.
    """
    _require_curve()
    public, secret = load_keypair(security.secret_key_file)
    try:
        socket.setsockopt(zmq.CURVE_SERVER, 1)
        socket.setsockopt(zmq.CURVE_PUBLICKEY, public)
        socket.setsockopt(zmq.CURVE_SECRETKEY, secret)
        socket.setsockopt(zmq.ZAP_DOMAIN, ZAP_DOMAIN.encode("ascii"))
    except zmq.ZMQError as err:
        raise SecurityError(f"cannot make the socket a CURVE server: {err.strerror}") from None
    try:
        socket.setsockopt(zmq.ZAP_ENFORCE_DOMAIN, 1)  # draft option in libzmq 4.3: absent from some builds
    except zmq.ZMQError:
        log.warning("this libzmq cannot enforce ZAP: a CURVE server without an Authenticator admits any client")


def secure_client(socket: zmq.SyncSocket, security: ClientSecurity) -> None:
    """Make ``socket`` (SUB, REQ, DEALER, ...) a CURVE client of one server; call before ``connect``."""
    _require_curve()
    public, secret = load_keypair(security.secret_key_file)
    server_public, server_secret = _load_certificate(security.server_public_key_file)
    if server_secret is not None:
        log.warning(
            "%s holds the server's secret key: clients need only its public %s file",
            security.server_public_key_file,
            PUBLIC_SUFFIX,
        )
    try:
        socket.setsockopt(zmq.CURVE_SERVERKEY, server_public)
        socket.setsockopt(zmq.CURVE_PUBLICKEY, public)
        socket.setsockopt(zmq.CURVE_SECRETKEY, secret)
    except zmq.ZMQError as err:
        raise SecurityError(f"cannot make the socket a CURVE client: {err.strerror}") from None


def client_security_from_options(secret_key: Path | None, server_key: Path | None) -> ClientSecurity | None:
    """ClientSecurity from a command's ``--secret-key`` / ``--server-key`` options: both, or neither (plain)."""
    if secret_key is None and server_key is None:
        return None
    if secret_key is None or server_key is None:
        raise SecurityError("--secret-key and --server-key go together: give both for CURVE, or neither")
    return ClientSecurity(secret_key_file=secret_key, server_public_key_file=server_key)


__all__ = [
    "PUBLIC_SUFFIX",
    "SECRET_SUFFIX",
    "ZAP_DOMAIN",
    "Authenticator",
    "ClientSecurity",
    "SecurityError",
    "ServerSecurity",
    "allowed_client_keys",
    "client_security_from_options",
    "generate_keypair",
    "load_keypair",
    "load_public_key",
    "secure_client",
    "secure_server",
]
