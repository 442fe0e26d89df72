"""Signing keys: ES256 pairs stored in PostgreSQL with the private half encrypted, a ring that caches
them per process, and the JWKS that publishes the current key and the recently retired ones."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from jwt.algorithms import ECAlgorithm
from sqlalchemy import select, text, update
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

from auth.models import SigningKey

ALG = "ES256"
# A retired key stays published this long: longer than the longest access-token lifetime the settings
# allow (3600 s), so every token it signed expires before its key disappears from the JWKS.
PUBLISH_RETIRED_S = 3600 + 300
_LOCK_ID = 74202  # advisory lock: one process creates the first key


def _wrapping_key(secret_key: str) -> bytes:
    """The AES-256 key that encrypts private keys at rest, derived from the settings' secret key."""
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"picool-signing-keys-v1", info=b"aes-256-gcm")
    return hkdf.derive(secret_key.encode())


def _thumbprint(jwk: dict[str, Any]) -> str:
    """RFC 7638 JWK thumbprint: a kid that names the public key itself."""
    canon = json.dumps({k: jwk[k] for k in ("crv", "kty", "x", "y")}, separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canon.encode()).digest()).rstrip(b"=").decode()


def encrypt_private(der: bytes, kid: str, secret_key: str) -> bytes:
    """``nonce || AES-GCM(der)`` with the kid as associated data (a blob cannot be moved to another kid)."""
    nonce = os.urandom(12)
    return nonce + AESGCM(_wrapping_key(secret_key)).encrypt(nonce, der, kid.encode())


def decrypt_private(blob: bytes, kid: str, secret_key: str) -> ec.EllipticCurvePrivateKey:
    """The private key sealed by :func:`encrypt_private` (raises if the secret key or kid is wrong)."""
    der = AESGCM(_wrapping_key(secret_key)).decrypt(blob[:12], blob[12:], kid.encode())
    key = serialization.load_der_private_key(der, password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ValueError("stored signing key is not an EC key")
    return key


def new_key_row(secret_key: str) -> SigningKey:
    """A fresh P-256 key pair as a row (not yet added to a session)."""
    private = ec.generate_private_key(ec.SECP256R1())
    jwk: dict[str, Any] = dict(ECAlgorithm.to_jwk(private.public_key(), as_dict=True))
    kid = _thumbprint(jwk)
    jwk.update({"kid": kid, "use": "sig", "alg": ALG})
    der = private.private_bytes(
        serialization.Encoding.DER, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    return SigningKey(kid=kid, alg=ALG, public_jwk=jwk, private_enc=encrypt_private(der, kid, secret_key))


async def rotate_key(session: AsyncSession, secret_key: str) -> str:
    """Add a new signing key, retire the current one (it stays published), and return the new kid."""
    row = new_key_row(secret_key)
    await session.execute(
        update(SigningKey).where(SigningKey.retired_at.is_(None)).values(retired_at=datetime.now(UTC))
    )
    session.add(row)
    await session.flush()
    return row.kid


async def ensure_key(session: AsyncSession, secret_key: str) -> None:
    """Create the first signing key unless one is current (safe when several processes start at once)."""
    await session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_ID})
    current = await session.scalar(select(SigningKey.kid).where(SigningKey.retired_at.is_(None)).limit(1))
    if current is None:
        session.add(new_key_row(secret_key))
        await session.flush()


@dataclass(frozen=True, slots=True)
class ActiveKey:
    """The key that signs new tokens."""

    kid: str
    private: ec.EllipticCurvePrivateKey


class KeyRing:
    """This process's view of the signing keys, reloaded from PostgreSQL every ``reload_s`` seconds.

    The signer and the JWKS come from the same snapshot, so in one process a token is never signed with a
    key that this process's JWKS does not publish. A key rotated by another process is picked up within
    ``reload_s``; until then the older key keeps signing, which is still valid.
    """

    def __init__(self, sessionmaker: async_sessionmaker[AsyncSession], secret_key: str, reload_s: float = 30.0) -> None:
        self._sessionmaker = sessionmaker
        self._secret_key = secret_key
        self.reload_s = reload_s
        self._active: ActiveKey | None = None
        self._jwks: dict[str, Any] = {"keys": []}
        self._loaded_at = 0.0
        self._lock = asyncio.Lock()
        # Called (outside the lock) when a reload for signing finds a new current key, so that this
        # process's verifier learns the key before the first token signed with it arrives.
        self.on_new_key: Callable[[], Awaitable[None]] | None = None

    async def reload(self) -> bool:
        """Read the keys again now; True when the current (signing) key changed."""
        async with self._sessionmaker() as session:
            rows = list((await session.scalars(select(SigningKey).order_by(SigningKey.created_at.desc()))).all())
        now = datetime.now(UTC)
        current = next((r for r in rows if r.retired_at is None), None)
        if current is None:
            raise RuntimeError("no current signing key; run `picool admin rotate-key`")
        published = [current.public_jwk]
        older = [r for r in rows if r is not current]
        for i, r in enumerate(older):
            recent = r.retired_at is not None and now - r.retired_at < timedelta(seconds=PUBLISH_RETIRED_S)
            if i == 0 or recent:  # always the previous key, plus any retired recently
                published.append(r.public_jwk)
        changed = self._active is None or self._active.kid != current.kid
        if changed:
            private = await asyncio.to_thread(decrypt_private, current.private_enc, current.kid, self._secret_key)
            self._active = ActiveKey(current.kid, private)
        self._jwks = {"keys": published}
        self._loaded_at = time.monotonic()
        return changed

    async def _fresh(self) -> None:
        if self._active is not None and time.monotonic() - self._loaded_at < self.reload_s:
            return
        if self._active is not None and self._lock.locked():
            # Another request is reloading; the key in hand stays valid meanwhile. Queueing here would hold
            # the caller's pooled connection while the reloader may be waiting for one.
            return
        changed = False
        async with self._lock:
            if self._active is None or time.monotonic() - self._loaded_at >= self.reload_s:
                changed = await self.reload()
        if changed and self.on_new_key is not None:
            await self.on_new_key()

    async def active(self) -> ActiveKey:
        """The key to sign with now."""
        await self._fresh()
        assert self._active is not None
        return self._active

    async def jwks(self) -> dict[str, Any]:
        """The published JWK Set (public keys only)."""
        await self._fresh()
        return self._jwks

    async def jwks_now(self) -> dict[str, Any]:
        """The JWK Set read from PostgreSQL now: for the in-process verifier, which asks only on an unknown
        kid (at most once per few seconds), so a key rotated by another process is found at once."""
        async with self._lock:
            await self.reload()
        return self._jwks
