"""Pure auth rules (auth/domain.py): email normalisation, PKCE, scopes, redirect and next-URL checks."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import urlsplit

import pytest
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from hypothesis import given
from hypothesis import strategies as st

from auth import domain


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("  Ann@Example.COM ", "ann@example.com"),
        ("ＡＮＮ@example.com", "ann@example.com"),  # full-width letters fold under NFKC
        ("a.b+tag@sub.example.org", "a.b+tag@sub.example.org"),
    ],
)
def test_normalise_email(raw: str, expected: str) -> None:
    assert domain.normalise_email(raw) == expected


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "no-at-sign",
        "a@b",
        "a@@b.com",
        "a b@example.com",
        "a@exa mple.com",
        "x" * 250 + "@example.com",
        "a\x00@b.com",
    ],
)
def test_normalise_email_refuses(raw: str) -> None:
    with pytest.raises(domain.AuthRuleError):
        domain.normalise_email(raw)


@given(st.emails())
def test_normalise_email_is_idempotent(email: str) -> None:
    try:
        once = domain.normalise_email(email)
    except domain.AuthRuleError:
        return
    assert domain.normalise_email(once) == once


def test_password_bounds() -> None:
    domain.check_password("x" * 8)
    domain.check_password("x" * 256)
    for bad in ("x" * 7, "x" * 257):
        with pytest.raises(domain.AuthRuleError):
            domain.check_password(bad)


def test_s256_agrees_with_authlib() -> None:
    # an independent implementation of RFC 7636 §4.2
    verifier = "dBjftJeZ4CVP-mJ92K9qCR4sITNpIU-cg1RRrE5-m3A"
    challenge = create_s256_code_challenge(verifier)
    assert domain.s256(verifier) == challenge
    assert domain.pkce_matches(verifier, challenge)
    assert not domain.pkce_matches(verifier[:-1] + "B", challenge)


@given(
    st.text(alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~", min_size=43, max_size=128)
)
def test_pkce_round_trip(verifier: str) -> None:
    challenge = domain.s256(verifier)
    expected = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    assert challenge == expected and domain.valid_challenge(challenge)
    assert domain.pkce_matches(verifier, challenge)
    # presenting the challenge itself as the verifier (what "plain" would accept) fails
    assert not domain.pkce_matches(challenge, challenge)


def test_pkce_rejects_short_or_odd_verifiers() -> None:
    for bad in ("a" * 42, "a" * 129, "a" * 42 + " ", "ä" * 43):
        assert not domain.pkce_matches(bad, domain.s256("a" * 43))


def test_scopes() -> None:
    assert domain.parse_scope("profile  email profile") == ["profile", "email"]
    assert domain.parse_scope('bad"scope') is None
    assert domain.parse_scope(None) == []
    assert domain.grant_scope([], ["profile"], "profile") == "profile"
    assert domain.grant_scope(["admin"], ["profile"], "profile") is None
    assert domain.grant_scope(["coupon:templates:read"], ["*"], "") == "coupon:templates:read"
    assert domain.narrow_scope(["profile"], "profile email") == "profile"
    assert domain.narrow_scope(["admin"], "profile") is None
    assert domain.narrow_scope([], "profile email") == "profile email"


def test_redirect_uris_match_exactly() -> None:
    registered = ["picool://oauth/callback", "http://127.0.0.1:8000/oauth/callback"]
    assert domain.redirect_uri_allowed("picool://oauth/callback", registered)
    for uri in ("picool://oauth/callback/", "PICOOL://oauth/callback", "http://127.0.0.1:8000/oauth/callback?x", ""):
        assert not domain.redirect_uri_allowed(uri, registered)
    assert domain.valid_redirect_uri("https://portal.example/cb")
    assert domain.valid_redirect_uri("http://localhost:3000/cb")
    for uri in ("http://portal.example/cb", "https://x/cb#frag", "javascript:alert(1)", "relative/cb", "https:///x"):
        assert not domain.valid_redirect_uri(uri), uri


@given(st.text(max_size=60))
def test_safe_next_never_leaves_the_origin(target: str) -> None:
    out = domain.safe_next(target, "/login")
    parts = urlsplit(out)
    assert out.startswith("/") and not out.startswith("//")
    assert not parts.scheme and not parts.netloc and "\\" not in out


def test_safe_next_keeps_authorize_urls() -> None:
    nxt = "/oauth2/authorize?client_id=runner-app&redirect_uri=picool%3A%2F%2Foauth%2Fcallback"
    assert domain.safe_next(nxt) == nxt
