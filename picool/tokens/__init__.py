"""Access-token verification for every subsystem: JWKS cached locally, algorithms pinned, denylist checked.

The verifier never calls the auth service per request: it keeps the published JWKS in memory and
refetches it only when a token names an unknown ``kid`` (at most once per ``refetch_interval_s``), and
the denylist answers from this process's copy of the live denials while it is subscribed to their notices.
"""

from picool.tokens._denylist import Denylist
from picool.tokens._verifier import (
    ALGORITHMS,
    ALL_AUDIENCES,
    AUDIENCE_AUTH,
    AUDIENCE_COUPON,
    AUDIENCE_RUN,
    ROLES,
    Identity,
    JwksSource,
    TokenError,
    TokenVerifier,
    http_jwks_source,
)

__all__ = [
    "ALGORITHMS",
    "ALL_AUDIENCES",
    "AUDIENCE_AUTH",
    "AUDIENCE_COUPON",
    "AUDIENCE_RUN",
    "ROLES",
    "Denylist",
    "Identity",
    "JwksSource",
    "TokenError",
    "TokenVerifier",
    "http_jwks_source",
]
