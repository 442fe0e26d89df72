"""The errors the auth use cases raise: problem+json domain errors and RFC 6749 OAuth2 errors."""

from __future__ import annotations

from picool.errors import Conflict, Forbidden, TooManyRequests, Unauthorized


class EmailTaken(Conflict):
    """An account with this email already exists (409 ``email_taken``)."""

    code = "email_taken"
    title = "Email taken"


class InvalidCredentials(Unauthorized):
    """Unknown email or wrong password; the two are indistinguishable on purpose (401 ``invalid_credentials``)."""

    code = "invalid_credentials"
    title = "Invalid credentials"


class AccountFrozen(Forbidden):
    """The account was frozen by an operator (403 ``account_frozen``); only said after a correct password."""

    code = "account_frozen"
    title = "Account frozen"


class TooManyAttempts(TooManyRequests):
    """Too many failed logins for this account or address (429 ``too_many_attempts`` with Retry-After)."""

    code = "too_many_attempts"
    title = "Too many attempts"


class OAuthError(Exception):
    """An RFC 6749 §5.2 / §4.1.2.1 error: ``error`` is the registered code, ``status`` the HTTP status."""

    def __init__(self, error: str, description: str = "", status: int = 400) -> None:
        super().__init__(f"{error}: {description}")
        self.error = error
        self.description = description
        self.status = status
