"""The console's session cookie and CSRF tokens: HMAC-signed, holding no admin token.

A session names the admin token it was opened with by a fingerprint (an HMAC of the token's
SHA-256 under the session secret), never by the token itself; each request looks the
fingerprint up among the tokens configured now, so a token removed from the config ends its
sessions, and the name and role always come from the config. The CSRF token lives in the signed
cookie and in each form; a POST whose form token differs is refused.

Each session has a random id in its cookie; signing out revokes that id (`Revocations`), so a
copy of the cookie is refused from then on, by the process that holds the revocation.
"""

from __future__ import annotations

import base64
import hashlib
import heapq
import hmac
import secrets
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from gateway.settings import AdminToken

COOKIE = "gateway_console"
"""The session cookie's name."""
SIGN_IN_COOKIE = "gateway_console_sign_in"
"""A short-lived cookie binding the sign-in form's CSRF token to this browser."""
FLASH_COOKIE = "gateway_console_flash"
"""The outcome of the last action, set by its redirect and shown once by the next page."""
FLASH_MAX_AGE = 60
"""Seconds a flash lives: the redirect's page reads it at once."""


@dataclass(frozen=True, slots=True)
class Session:
    """A signed-in browser: its random id, which token (by fingerprint), its CSRF token, when it
    expires."""

    id: str
    """Random (128 bits), made at sign-in and never reused: what sign-out revokes."""
    fingerprint: str
    csrf: str
    expires: int
    """Unix seconds."""


class SessionSigner:
    """Signs and checks session cookies and CSRF tokens with one secret."""

    def __init__(self, secret: bytes, max_age: int) -> None:
        self._secret = secret
        self.max_age = max_age

    def fingerprint(self, token_sha256: bytes) -> str:
        """What a session keeps of its admin token: not reversible without the secret."""
        return hmac.new(self._secret, b"token:" + token_sha256, hashlib.sha256).hexdigest()[:32]

    def open(self, token: AdminToken, now: int) -> tuple[Session, str]:
        """A new session for `token` and its cookie value: always a fresh random id, so signing
        in again never revives a revoked session."""
        session = Session(
            secrets.token_urlsafe(16),
            self.fingerprint(token.token_sha256),
            secrets.token_urlsafe(32),
            now + self.max_age,
        )
        doc = {"i": session.id, "f": session.fingerprint, "c": session.csrf, "e": session.expires}
        return session, self._sign(b"session:", orjson.dumps(doc))

    def read(self, cookie: str | None, now: int) -> Session | None:
        """The session a cookie holds, or None when it is missing, forged, expired or has no
        id (a cookie of a build before session ids). Revocation is checked by `Revocations`."""
        payload = self._verify(b"session:", cookie)
        if payload is None:
            return None
        try:
            doc = orjson.loads(payload)
            session = Session(str(doc["i"]), str(doc["f"]), str(doc["c"]), int(doc["e"]))
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        return session if session.expires > now else None

    def owner(self, session: Session, tokens: Sequence[AdminToken]) -> AdminToken | None:
        """The configured token the session was opened with, if it is still configured."""
        found = None
        for token in tokens:  # every one, always: no early exit to time
            if hmac.compare_digest(self.fingerprint(token.token_sha256), session.fingerprint):
                found = token
        return found

    def sign_in_pair(self) -> tuple[str, str]:
        """(cookie value, form token) for the sign-in form: the form token is the cookie's
        nonce signed, so a form posted from another site, without the cookie, is refused."""
        nonce = secrets.token_urlsafe(24)
        return nonce, self._mac(b"sign-in:", nonce.encode())

    def sign_in_ok(self, cookie: str | None, form_token: str | None) -> bool:
        """Whether the sign-in form's token matches this browser's sign-in cookie."""
        if not cookie or not form_token:
            return False
        return hmac.compare_digest(self._mac(b"sign-in:", cookie.encode()), form_token)

    def flash(self, session: Session, message: str, now: int) -> str:
        """The flash cookie's value carrying `message` (an action's outcome) for this session
        until `now` + FLASH_MAX_AGE: signed, so a link or another session cannot fake one."""
        doc = {"m": message, "e": now + FLASH_MAX_AGE}
        return self._sign(b"flash:" + session.csrf.encode() + b":", orjson.dumps(doc))

    def read_flash(self, session: Session, cookie: str | None, now: int) -> str | None:
        """The message a flash cookie holds for this session, or None when it is missing,
        forged, another session's or expired."""
        payload = self._verify(b"flash:" + session.csrf.encode() + b":", cookie)
        if payload is None:
            return None
        try:
            doc = orjson.loads(payload)
            message, expires = str(doc["m"]), int(doc["e"])
        except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
            return None
        return message if expires > now else None

    def _mac(self, purpose: bytes, payload: bytes) -> str:
        digest = hmac.new(self._secret, purpose + payload, hashlib.sha256).digest()
        return base64.urlsafe_b64encode(digest).decode().rstrip("=")

    def _sign(self, purpose: bytes, payload: bytes) -> str:
        body = base64.urlsafe_b64encode(payload).decode().rstrip("=")
        return f"{body}.{self._mac(purpose, payload)}"

    def _verify(self, purpose: bytes, value: str | None) -> bytes | None:
        if not value or value.count(".") != 1:
            return None
        body, mac = value.split(".")
        try:
            payload = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
        except ValueError:
            return None
        return payload if hmac.compare_digest(self._mac(purpose, payload), mac) else None


class Revocations:
    """The ids of sessions signed out before they expired, each kept until its session's own
    expiry (after which the cookie is refused as expired anyway), so it holds at most the
    sessions signed out within one `ui.session_max_age`; only a valid session with its CSRF
    token can add one. In this process's memory: another worker or replica keeps its own.
    """

    def __init__(self) -> None:
        self._until: dict[str, int] = {}
        self._by_expiry: list[tuple[int, str]] = []

    def revoke(self, session: Session, now: int) -> None:
        """Refuse `session` from now on (until it expires); forget the expired ones."""
        self.prune(now)
        if session.expires > now and session.id not in self._until:
            self._until[session.id] = session.expires
            heapq.heappush(self._by_expiry, (session.expires, session.id))

    def revoked(self, session: Session) -> bool:
        """Whether `session` was signed out."""
        return session.id in self._until

    def prune(self, now: int) -> None:
        """Forget revocations whose sessions have expired (unix seconds `now`)."""
        while self._by_expiry and self._by_expiry[0][0] <= now:
            _, gone = heapq.heappop(self._by_expiry)
            self._until.pop(gone, None)

    def __len__(self) -> int:
        return len(self._until)


def csrf_ok(session: Session, form_token: object) -> bool:
    """Whether a POSTed form carries this session's CSRF token."""
    return isinstance(form_token, str) and hmac.compare_digest(
        session.csrf.encode(), form_token.encode()
    )
