"""Access tokens and the verifier every subsystem uses: hostile tokens, denylist, key rotation."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import time
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

from auth import service as auth_service
from picool.kernel import Kernel
from picool.redis import create_redis
from picool.testing import wait_for
from picool.tokens import ALL_AUDIENCES, Denylist, TokenError, TokenVerifier
from tests.conftest import Accounts, Actor

ME = "/api/v1/auth/me"


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _claims(actor: Actor, kernel: Kernel, **over: Any) -> dict[str, Any]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": kernel.settings.token_issuer,
        "sub": actor.user_id,
        "aud": list(ALL_AUDIENCES),
        "iat": now,
        "nbf": now,
        "exp": now + 300,
        "jti": f"test-{now}-{over.get('jti', 'x')}",
        "scope": "profile",
        "role": actor.role,
        "client_id": "runner-app",
    }
    claims.update(over)
    return {k: v for k, v in claims.items() if v is not None}


async def _sign_ours(kernel: Kernel, claims: dict[str, Any], **headers: Any) -> str:
    key = await auth_service.services_of(kernel).keys.active()
    hdr = {"kid": key.kid, "typ": "at+jwt", **headers}
    return jwt.encode(claims, key.private, algorithm="ES256", headers=hdr)


async def _status(client: httpx.AsyncClient, token: str) -> int:
    return (await client.get(ME, headers={"Authorization": f"Bearer {token}"})).status_code


async def test_issued_token_has_the_contract_shape(
    client: httpx.AsyncClient, accounts: Accounts, kernel: Kernel
) -> None:
    merchant = await accounts.merchant()
    header = jwt.get_unverified_header(merchant.access_token)
    assert header["alg"] == "ES256" and header["typ"] == "at+jwt" and header["kid"]
    claims = jwt.decode(merchant.access_token, options={"verify_signature": False})
    assert claims["iss"] == kernel.settings.token_issuer
    assert claims["aud"] == ["picool-auth", "picool-run", "picool-coupon"]
    assert claims["sub"] == merchant.user_id
    assert claims["role"] == "merchant" and claims["merchant_id"] == merchant.merchant_id
    assert claims["exp"] - claims["iat"] == 900 and claims["nbf"] == claims["iat"]
    assert claims["client_id"] == "merchant-portal"
    assert claims["jti"] and claims["fid"] and claims["sid"] and claims["scope"] == "profile"
    ident = await kernel.verifier.verify(merchant.access_token)
    assert ident.user_id == merchant.user_id and ident.merchant_id == merchant.merchant_id
    assert ident.family_id == claims["fid"] and ident.session_id == claims["sid"]


async def test_a_token_we_sign_ourselves_is_accepted(
    client: httpx.AsyncClient, accounts: Accounts, kernel: Kernel
) -> None:
    # the baseline for every hostile variant below: only the named defect makes them fail
    runner = await accounts.runner()
    assert await _status(client, await _sign_ours(kernel, _claims(runner, kernel))) == 200


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ({"exp": int(time.time()) - 120}, "expired"),
        ({"nbf": int(time.time()) + 600}, "not_yet_valid"),
        ({"iss": "https://evil.example"}, "bad_issuer"),
        ({"aud": ["picool-elsewhere"]}, "bad_audience"),
        ({"aud": None}, "invalid"),
        ({"jti": None}, "invalid"),
        ({"role": "superuser"}, "bad_role"),
    ],
)
async def test_bad_claims_are_refused(
    client: httpx.AsyncClient, accounts: Accounts, kernel: Kernel, override: dict[str, Any], reason: str
) -> None:
    runner = await accounts.runner()
    claims = _claims(runner, kernel)
    claims.update(override)
    token = await _sign_ours(kernel, {k: v for k, v in claims.items() if v is not None})
    with pytest.raises(TokenError) as err:
        await kernel.verifier.verify(token)
    assert err.value.reason == reason
    assert await _status(client, token) == 401


async def test_expired_token_says_token_expired(client: httpx.AsyncClient, accounts: Accounts, kernel: Kernel) -> None:
    runner = await accounts.runner()
    token = await _sign_ours(kernel, _claims(runner, kernel, exp=int(time.time()) - 120))
    resp = await client.get(ME, headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 401 and resp.json()["code"] == "token_expired"


async def test_alg_none_is_refused(client: httpx.AsyncClient, accounts: Accounts, kernel: Kernel) -> None:
    runner = await accounts.runner()
    key = await auth_service.services_of(kernel).keys.active()
    for alg in ("none", "None", "NONE"):
        header = _b64(json.dumps({"alg": alg, "typ": "at+jwt", "kid": key.kid}).encode())
        payload = _b64(json.dumps(_claims(runner, kernel, role="operator")).encode())
        for token in (f"{header}.{payload}.", f"{header}.{payload}"):
            assert await _status(client, token) == 401


async def test_hs256_signed_with_our_public_key_is_refused(
    client: httpx.AsyncClient, accounts: Accounts, kernel: Kernel
) -> None:
    runner = await accounts.runner()
    jwks = (await client.get("/.well-known/jwks.json")).json()
    key = await auth_service.services_of(kernel).keys.active()
    jwk = next(k for k in jwks["keys"] if k["kid"] == key.kid)
    public = ECAlgorithm.from_jwk(json.dumps(jwk))
    assert isinstance(public, ec.EllipticCurvePublicKey)
    pem = public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    # the classic key-confusion secrets: the PEM, the DER and the JWK JSON of our public key
    der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    for secret in (pem, der, json.dumps(jwk).encode()):
        header = _b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": key.kid}).encode())
        payload = _b64(json.dumps(_claims(runner, kernel, role="operator")).encode())
        sig = _b64(hmac.new(secret, f"{header}.{payload}".encode(), hashlib.sha256).digest())
        token = f"{header}.{payload}.{sig}"
        with pytest.raises(TokenError) as err:
            await kernel.verifier.verify(token)
        assert err.value.reason == "bad_alg"
        assert await _status(client, token) == 401


async def test_unknown_kid_and_foreign_key_are_refused(
    client: httpx.AsyncClient, accounts: Accounts, kernel: Kernel
) -> None:
    runner = await accounts.runner()
    foreign = ec.generate_private_key(ec.SECP256R1())
    claims = _claims(runner, kernel)
    unknown = jwt.encode(claims, foreign, algorithm="ES256", headers={"kid": "not-a-key-of-ours", "typ": "at+jwt"})
    with pytest.raises(TokenError) as err:
        await kernel.verifier.verify(unknown)
    assert err.value.reason == "unknown_kid"
    key = await auth_service.services_of(kernel).keys.active()
    forged = jwt.encode(claims, foreign, algorithm="ES256", headers={"kid": key.kid, "typ": "at+jwt"})
    assert await _status(client, unknown) == 401
    assert await _status(client, forged) == 401
    no_kid = jwt.encode(claims, key.private, algorithm="ES256", headers={"typ": "at+jwt"})
    assert await _status(client, no_kid) == 401


async def test_tampered_payload_is_refused(client: httpx.AsyncClient, accounts: Accounts) -> None:
    runner = await accounts.runner()
    header, payload, sig = runner.access_token.split(".")
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    claims["role"] = "operator"
    tampered = f"{header}.{_b64(json.dumps(claims).encode())}.{sig}"
    assert await _status(client, tampered) == 401
    flipped = sig[:-2] + ("A" if sig[-2] != "A" else "B") + sig[-1]
    assert await _status(client, f"{header}.{payload}.{flipped}") == 401
    assert await _status(client, runner.access_token) == 200


async def test_refresh_token_or_other_typ_is_not_an_access_token(
    client: httpx.AsyncClient, accounts: Accounts, kernel: Kernel
) -> None:
    runner = await accounts.runner()
    assert await _status(client, runner.refresh_token) == 401
    key = await auth_service.services_of(kernel).keys.active()
    for typ in (None, "JWT", "id_token", 5):  # None: no typ header at all (pyjwt drops a None typ)
        token = jwt.encode(
            _claims(runner, kernel), key.private, algorithm="ES256", headers={"kid": key.kid, "typ": typ}
        )
        assert jwt.get_unverified_header(token).get("typ") == typ
        assert await _status(client, token) == 401, typ


async def test_garbage_bearer_values_are_401_never_500(client: httpx.AsyncClient) -> None:
    for value in (
        "Bearer ",
        "Bearer a.b.c",
        "Bearer " + "x" * 5000,
        "Basic Zm9vOmJhcg==",
        "Bearer e30.e30.e30",
        "Bearer W10.W10.AA",
    ):
        resp = await client.get(ME, headers={"Authorization": value})
        assert resp.status_code == 401, value


async def test_denylist_refuses_jti_family_and_subject(
    client: httpx.AsyncClient, accounts: Accounts, kernel: Kernel
) -> None:
    a, b, c = await accounts.runner("a"), await accounts.runner("b"), await accounts.runner("c")
    ids = {x.user_id: (await kernel.verifier.verify(x.access_token)) for x in (a, b, c)}
    await kernel.denylist.deny("jti", ids[a.user_id].jti, 60)
    fid = ids[b.user_id].family_id
    assert fid is not None
    await kernel.denylist.deny("fam", fid, 60)
    await kernel.denylist.deny("sub", c.user_id, 60)
    for actor in (a, b, c):
        assert await _status(client, actor.access_token) == 401


async def test_key_rotation_keeps_old_tokens_valid(
    client: httpx.AsyncClient, accounts: Accounts, kernel: Kernel
) -> None:
    runner = await accounts.runner()
    old_kid = jwt.get_unverified_header(runner.access_token)["kid"]
    async with kernel.sessionmaker() as session, session.begin():
        new_kid = await auth_service.rotate_key(session, kernel.settings.secret_key)
    assert new_kid != old_kid
    keys = auth_service.services_of(kernel).keys
    keys.reload_s, saved = 0.0, keys.reload_s  # pick the rotation up now instead of within 30 s
    try:
        tokens = await accounts.login(runner.email, runner.password)
    finally:
        keys.reload_s = saved
    assert jwt.get_unverified_header(tokens["access_token"])["kid"] == new_kid
    assert await _status(client, tokens["access_token"]) == 200
    assert await _status(client, runner.access_token) == 200  # signed before the rotation
    published = {k["kid"] for k in (await client.get("/.well-known/jwks.json")).json()["keys"]}
    assert {old_kid, new_kid} <= published


async def test_jwks_publishes_public_parts_only(client: httpx.AsyncClient) -> None:
    resp = await client.get("/.well-known/jwks.json")
    assert resp.status_code == 200
    for key in resp.json()["keys"]:
        assert key["kty"] == "EC" and key["crv"] == "P-256" and key["alg"] == "ES256" and key["use"] == "sig"
        assert "d" not in key


async def _refused(kernel: Kernel, token: str) -> bool:
    try:
        await kernel.verifier.verify(token)
    except TokenError:
        return True
    return False


async def test_a_revocation_in_another_process_reaches_this_one(
    client: httpx.AsyncClient, accounts: Accounts, kernel: Kernel
) -> None:
    # The verifier remembers tokens that passed and "not revoked" answers; a revocation made by another
    # process (its own Redis client and denylist) must still reach this one, through the notices.
    runner = await accounts.runner()
    ident = await kernel.verifier.verify(runner.access_token)
    assert await _status(client, runner.access_token) == 200
    other_redis = create_redis(kernel.settings)
    try:
        await Denylist(other_redis).deny("jti", ident.jti, 60)
        await wait_for(lambda: _refused(kernel, runner.access_token), timeout_s=2)
    finally:
        await other_redis.aclose()
    assert await _status(client, runner.access_token) == 401


async def test_a_remembered_token_still_expires(accounts: Accounts, kernel: Kernel) -> None:
    runner = await accounts.runner()
    keys = auth_service.services_of(kernel).keys
    verifier = TokenVerifier(kernel.settings.token_issuer, ALL_AUDIENCES, keys.jwks_now, None, leeway_s=0)
    # Three seconds of life, not one: ``int()`` can take most of a second off, and a slow machine can spend
    # the rest between signing and the first check (CI once saw this token expire before it was checked).
    token = await _sign_ours(kernel, _claims(runner, kernel, exp=int(time.time()) + 3))
    assert (await verifier.verify(token)).user_id == runner.user_id
    assert (await verifier.verify(token)).user_id == runner.user_id  # the remembered identity
    await asyncio.sleep(max(0.0, (await verifier.verify(token)).expires_at - time.time()) + 0.05)
    with pytest.raises(TokenError) as err:
        await verifier.verify(token)
    assert err.value.reason == "expired"
