"""Pure rules of the auth subsystem: input normalisation, PKCE, scopes, redirect checks, throttle math.

Nothing here does I/O; the service layer calls these and turns :class:`AuthRuleError` into domain errors.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import unicodedata
from urllib.parse import urlsplit

ROLE_RUNNER = "runner"
ROLE_MERCHANT = "merchant"
ROLE_OPERATOR = "operator"
ROLE_SERVICE = "service"
ACCOUNT_ROLES = (ROLE_RUNNER, ROLE_MERCHANT, ROLE_OPERATOR)

PASSWORD_MIN = 8
PASSWORD_MAX = 256
EMAIL_MAX = 254
DISPLAY_NAME_MAX = 100

# Scopes a user token may carry; the first is granted when a client asks for none.
USER_SCOPES = ("profile", "email", "offline_access")
DEFAULT_USER_SCOPE = "profile"
ANY_SCOPE = "*"  # in a client's allowed scopes: any well-formed scope (the internal service client)
_SCOPE_TOKEN = re.compile(r"^[\x21\x23-\x5B\x5D-\x7E]{1,64}$")  # RFC 6749 §3.3 scope-token, bounded
_PKCE_VERIFIER = re.compile(r"^[A-Za-z0-9\-._~]{43,128}$")  # RFC 7636 §4.1
_PKCE_CHALLENGE = re.compile(r"^[A-Za-z0-9\-_]{43}$")  # base64url(SHA-256) without padding
_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]+$")

# Login throttling (per normalised email and per client IP, counted over a sliding window).
THROTTLE_WINDOW_S = 15 * 60
ACCOUNT_FREE_FAILURES = 5  # failures per account before it is locked for a growing time
IP_FREE_FAILURES = 20  # failures per IP (any accounts) before that IP is locked
LOCK_BASE_S = 30  # first lock; doubles with each further failure
LOCK_MAX_S = 15 * 60
TARPIT_AFTER = 3  # from this many failures on, answers are slowed down a little (growing)
TARPIT_MAX_S = 1.0


class AuthRuleError(ValueError):
    """An input breaks an auth rule; ``field`` names it, the message says why."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}")
        self.field = field
        self.message = message


def normalise_email(raw: str) -> str:
    """The canonical form of an email address (NFKC, trimmed, lower-case); AuthRuleError if it is not one.

    NFKC folds look-alike compatibility characters (full-width letters etc.) so that two spellings of
    one address cannot become two accounts.
    """
    email = unicodedata.normalize("NFKC", raw).strip().lower()
    if len(email) > EMAIL_MAX or not _EMAIL.match(email) or any(unicodedata.category(c)[0] == "C" for c in email):
        raise AuthRuleError("email", "not a valid email address")
    return email


def check_password(password: str) -> None:
    """AuthRuleError unless ``password`` has 8 to 256 characters."""
    if len(password) < PASSWORD_MIN:
        raise AuthRuleError("password", f"must have at least {PASSWORD_MIN} characters")
    if len(password) > PASSWORD_MAX:
        raise AuthRuleError("password", f"must have at most {PASSWORD_MAX} characters")


def clean_text(field: str, raw: str | None, *, max_len: int, required: bool = True) -> str | None:
    """``raw`` trimmed and NFC-normalised; AuthRuleError if empty (when required), too long or with control chars."""
    if raw is None:
        if required:
            raise AuthRuleError(field, "is required")
        return None
    value = unicodedata.normalize("NFC", raw).strip()
    if not value:
        if required:
            raise AuthRuleError(field, "must not be empty")
        return None
    if len(value) > max_len:
        raise AuthRuleError(field, f"must have at most {max_len} characters")
    if any(unicodedata.category(c) == "Cc" for c in value):
        raise AuthRuleError(field, "must not contain control characters")
    return value


def s256(verifier: str) -> str:
    """The PKCE S256 challenge of ``verifier`` (RFC 7636 §4.2)."""
    digest = hashlib.sha256(verifier.encode("ascii")).digest()
    return base64.urlsafe_b64encode(digest).rstrip(b"=").decode("ascii")


def valid_challenge(challenge: str) -> bool:
    """True when ``challenge`` has the shape of an S256 challenge."""
    return bool(_PKCE_CHALLENGE.match(challenge))


def pkce_matches(verifier: str, challenge: str) -> bool:
    """True when ``verifier`` is well-formed and hashes to ``challenge`` (constant-time comparison)."""
    if not _PKCE_VERIFIER.match(verifier):
        return False
    return hmac.compare_digest(s256(verifier), challenge)


def parse_scope(raw: str | None) -> list[str] | None:
    """The scope tokens of a ``scope`` parameter in order without duplicates; None when a token is malformed."""
    if not raw:
        return []
    out: list[str] = []
    for token in raw.split(" "):
        if not token:
            continue
        if not _SCOPE_TOKEN.match(token):
            return None
        if token not in out:
            out.append(token)
    return out


def grant_scope(requested: list[str], allowed: list[str], default: str) -> str | None:
    """The scope to grant: ``requested`` if every token is allowed (``*`` allows any), ``default`` if none
    was requested, None if something not allowed was asked for."""
    if not requested:
        return default
    if ANY_SCOPE in allowed:
        return " ".join(requested)
    if all(s in allowed for s in requested):
        return " ".join(requested)
    return None


def narrow_scope(requested: list[str], granted: str) -> str | None:
    """For a refresh: ``requested`` if it is a subset of ``granted`` (all of ``granted`` when empty), else None."""
    have = granted.split()
    if not requested:
        return granted
    if all(s in have for s in requested):
        return " ".join(requested)
    return None


def redirect_uri_allowed(uri: str, registered: list[str]) -> bool:
    """Exact string match against the registered URIs (RFC 9700 §4.1.3: no prefix or pattern matching)."""
    return any(hmac.compare_digest(uri.encode(), r.encode()) for r in registered)


def valid_redirect_uri(uri: str) -> bool:
    """True when ``uri`` may be registered: absolute, no fragment, and https except for loopback or app schemes."""
    try:
        parts = urlsplit(uri)
    except ValueError:
        return False
    if not parts.scheme or parts.fragment or any(c.isspace() for c in uri):
        return False
    if parts.scheme == "https":
        return bool(parts.netloc)
    if parts.scheme == "http":
        return parts.hostname in {"127.0.0.1", "localhost", "::1"}
    # A private-use scheme of a native app (RFC 8252 §7.1), e.g. ``picool://oauth/callback``.
    return parts.scheme not in {"javascript", "data", "file", "vbscript"}


def safe_next(target: str | None, fallback: str = "/login/done") -> str:
    """``target`` if it is a same-origin path (no scheme, no host, no ``//`` or backslash tricks), else ``fallback``.

    The login page only ever redirects within this origin, so it cannot be used as an open redirect.
    """
    if not target or not target.startswith("/") or target.startswith("//") or "\\" in target:
        return fallback
    if any(c.isspace() or unicodedata.category(c) == "Cc" for c in target):
        return fallback
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return fallback
    return target


def lock_seconds(failures: int, free: int) -> int:
    """How long a key with ``failures`` recent failures stays locked: 0 below ``free``, then
    ``LOCK_BASE_S`` doubling per further failure, capped at ``LOCK_MAX_S``."""
    if failures < free:
        return 0
    return int(min(LOCK_MAX_S, LOCK_BASE_S * 2 ** min(failures - free, 16)))


def tarpit_seconds(failures: int) -> float:
    """The delay added to an answer after ``failures`` recent failures: 0 below ``TARPIT_AFTER``, then growing."""
    if failures < TARPIT_AFTER:
        return 0.0
    return float(min(TARPIT_MAX_S, 0.05 * 2 ** min(failures - TARPIT_AFTER, 10)))
