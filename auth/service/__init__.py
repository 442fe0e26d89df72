"""Use cases of the auth subsystem: accounts, keys, OAuth2 grants, tokens, SSO sessions, throttling.

Services take sessions and clients as arguments and raise domain errors (or :class:`OAuthError` for the
OAuth2 endpoints), never HTTP ones. :class:`AuthServices` bundles the per-process pieces; the startup hook
parks one in ``kernel.services["auth"]``.
"""

from __future__ import annotations

from dataclasses import dataclass

from auth.service._accounts import (
    authenticate,
    bind_id_source,
    create_operator,
    get_user,
    register_merchant,
    register_runner,
)
from auth.service._clients import (
    MERCHANT_PORTAL,
    RUNNER_APP,
    SERVICE_CLIENT,
    authenticate_client,
    create_client,
    get_client,
    hash_secret,
    seed_builtin_clients,
)
from auth.service._errors import AccountFrozen, EmailTaken, InvalidCredentials, OAuthError, TooManyAttempts
from auth.service._grants import Grants, NeedLogin, RedirectTo, ShowError
from auth.service._keys import KeyRing, ensure_key, rotate_key
from auth.service._passwords import hash_password, verify_password
from auth.service._sessions import CodeStore, SessionStore, SsoSession
from auth.service._signin import SignedIn, logout, native_login, set_frozen, sign_in
from auth.service._throttle import LoginThrottle
from auth.service._tokens import TokenService, TokenSet
from picool.kernel import Kernel


@dataclass(frozen=True, slots=True)
class AuthServices:
    """The auth subsystem's per-process service objects."""

    keys: KeyRing
    tokens: TokenService
    grants: Grants
    sessions: SessionStore
    codes: CodeStore
    throttle: LoginThrottle

    @classmethod
    def build(cls, kernel: Kernel) -> AuthServices:
        """Wire the services to ``kernel``'s connections."""
        keys = KeyRing(kernel.sessionmaker, kernel.settings.secret_key)
        tokens = TokenService(kernel.settings, kernel.sessionmaker, keys, kernel.denylist, kernel.verifier)
        codes = CodeStore(kernel.redis, kernel.scripts)
        return cls(
            keys=keys,
            tokens=tokens,
            grants=Grants(kernel.settings, kernel.sessionmaker, tokens, codes),
            sessions=SessionStore(kernel.redis),
            codes=codes,
            throttle=LoginThrottle(kernel.redis, kernel.scripts),
        )


def services_of(kernel: Kernel) -> AuthServices:
    """The auth services of ``kernel``'s process (set up by the auth startup hook)."""
    svc = kernel.services.get("auth")
    if not isinstance(svc, AuthServices):
        raise RuntimeError("the auth subsystem is not started in this process")
    return svc


__all__ = [
    "MERCHANT_PORTAL",
    "RUNNER_APP",
    "SERVICE_CLIENT",
    "AccountFrozen",
    "AuthServices",
    "CodeStore",
    "EmailTaken",
    "Grants",
    "InvalidCredentials",
    "KeyRing",
    "LoginThrottle",
    "NeedLogin",
    "OAuthError",
    "RedirectTo",
    "SessionStore",
    "ShowError",
    "SignedIn",
    "SsoSession",
    "TokenService",
    "TokenSet",
    "TooManyAttempts",
    "authenticate",
    "authenticate_client",
    "bind_id_source",
    "create_client",
    "create_operator",
    "ensure_key",
    "get_client",
    "get_user",
    "hash_password",
    "hash_secret",
    "logout",
    "native_login",
    "register_merchant",
    "register_runner",
    "rotate_key",
    "seed_builtin_clients",
    "services_of",
    "set_frozen",
    "sign_in",
    "verify_password",
]
