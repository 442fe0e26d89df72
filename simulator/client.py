"""A simulated device talking to the public HTTP API: its own connection, its own address, its tokens.

Each phone or till gets its own ``httpx.AsyncClient``. Against a loopback URL every device also
connects *from* an address of its own in 127.0.0.0/8, as real phones arrive from addresses of their
own: the gateway's per-IP limits (login attempts, claims per IP) then apply per device, as in the
field, instead of treating the whole crowd as one abusive address.
"""

from __future__ import annotations

import asyncio
import ipaddress
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

LOOPBACK_HOSTS = {"127.0.0.1", "localhost"}
RETRIES_429 = 6
TRANSPORT_RETRIES = 2


class ApiError(Exception):
    """A non-2xx answer: ``status`` and the problem's stable ``code`` (``error`` for OAuth2 endpoints)."""

    def __init__(self, status: int, body: Any, path: str) -> None:
        self.status = status
        self.body = body if isinstance(body, dict) else {}
        self.code = str(self.body.get("code") or self.body.get("error") or f"http_{status}")
        super().__init__(f"{path}: {status} {self.code} {self.body.get('detail', '')}".strip())


@dataclass
class Traffic:
    """What every device sent and got back, for the summary (status classes and problem codes)."""

    requests: int = 0
    by_status: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    rate_limited: int = 0
    transport_errors: int = 0  # requests that failed for good
    transport_retries: int = 0  # network errors a retry got past


def device_address(kind: int, index: int) -> str:
    """The loopback source address of device ``index`` of ``kind`` (1 runners, 2 merchants, 3 operators)."""
    return str(ipaddress.IPv4Address(f"127.{kind}.0.0") + 1 + index + index // 254 * 2)


class Device:
    """One phone or till: an HTTP client, optionally bound to its own loopback address, and the tokens
    of whoever signed in on it (refreshed once on a 401, rotation respected)."""

    def __init__(self, base_url: str, traffic: Traffic, *, source: str | None = None, timeout_s: float = 30.0) -> None:
        host = urlsplit(base_url).hostname or ""
        transport = httpx.AsyncHTTPTransport(
            local_address=source if source and host in LOOPBACK_HOSTS else None, retries=2
        )
        self.http = httpx.AsyncClient(base_url=base_url, transport=transport, timeout=timeout_s)
        self.traffic = traffic
        self.access_token = ""
        self.refresh_token = ""
        self.client_id = ""
        self._refreshing: asyncio.Lock = asyncio.Lock()

    async def close(self) -> None:
        """Close the connection."""
        await self.http.aclose()

    async def call(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        auth: bool = True,
        headers: dict[str, str] | None = None,
        idempotent: bool = False,
    ) -> Any:
        """One JSON request; returns the decoded body (None when empty). Raises :class:`ApiError` for any
        non-2xx answer after waiting out ``429``s (``Retry-After``) a few times and refreshing once on a 401.

        A request that is safe to repeat (a GET, or ``idempotent``: it carries an idempotency key, or
        the API makes a repeat harmless) is sent again after a network error, as an app would: a phone
        on a train loses answers, and an idle keep-alive connection may be closed just as it is reused.
        """
        refreshed = False
        lost = 0
        for attempt in range(RETRIES_429 + 1):
            sent = dict(headers or {})
            if auth and self.access_token:
                sent["Authorization"] = f"Bearer {self.access_token}"
            try:
                resp = await self.http.request(method, path, json=json, params=params, headers=sent)
            except httpx.TransportError:
                if (method == "GET" or idempotent) and lost < TRANSPORT_RETRIES:
                    lost += 1
                    self.traffic.transport_retries += 1
                    await asyncio.sleep(0.2 * lost)
                    continue
                self.traffic.transport_errors += 1
                raise
            self.traffic.requests += 1
            self.traffic.by_status[resp.status_code] += 1
            body = resp.json() if resp.content and "json" in resp.headers.get("content-type", "") else None
            if resp.status_code >= 500:
                self.traffic.server_errors.append(f"{method} {path} -> {resp.status_code} {resp.text[:200]}")
            if resp.status_code == 429 and attempt < RETRIES_429:
                self.traffic.rate_limited += 1
                if isinstance(body, dict) and body.get("code") == "rate_limited" and "claims" in path:
                    raise ApiError(429, body, path)  # a claim refused for rate: the scenario counts it
                await asyncio.sleep(min(10.0, float(resp.headers.get("retry-after", "1") or 1)))
                continue
            if resp.status_code == 401 and auth and self.refresh_token and not refreshed:
                refreshed = True
                await self.refresh()
                continue
            if resp.status_code >= 400:
                raise ApiError(resp.status_code, body, path)
            return body
        raise ApiError(429, {"code": "rate_limited"}, path)

    async def login(self, email: str, password: str, client_id: str) -> dict[str, Any]:
        """Password login (the API the apps use); keeps the tokens on the device."""
        tokens: dict[str, Any] = await self.call(
            "POST", "/api/v1/auth/login", json={"email": email, "password": password, "client_id": client_id},
            auth=False,
        )  # fmt: skip
        self.client_id = client_id
        self.access_token = tokens["access_token"]
        self.refresh_token = tokens.get("refresh_token", "")
        return tokens

    async def refresh(self) -> None:
        """Trade the refresh token for new tokens (it rotates: the new one replaces it)."""
        async with self._refreshing:
            resp = await self.http.post(
                "/oauth2/token",
                data={"grant_type": "refresh_token", "refresh_token": self.refresh_token, "client_id": self.client_id},
            )
            self.traffic.requests += 1
            self.traffic.by_status[resp.status_code] += 1
            if resp.status_code != 200:
                raise ApiError(resp.status_code, resp.json() if resp.content else None, "/oauth2/token")
            body = resp.json()
            self.access_token = body["access_token"]
            self.refresh_token = body.get("refresh_token", self.refresh_token)
