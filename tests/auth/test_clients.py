"""The built-in clients' settings: the merchant portal accepts its own callback on the public URL."""

from __future__ import annotations

from auth.service._clients import portal_redirect_uris
from picool.settings import Settings


def test_portal_callback_on_the_public_url_is_added() -> None:
    configured = ["http://127.0.0.1:8000/portal/callback", "http://localhost:8000/portal/callback"]
    assert portal_redirect_uris(Settings(port=8000)) == configured  # already there: not twice
    assert portal_redirect_uris(Settings(port=9001)) == [*configured, "http://127.0.0.1:9001/portal/callback"]
    assert portal_redirect_uris(Settings(public_url="https://shop.example/")) == [
        *configured,
        "https://shop.example/portal/callback",
    ]
    # Plain http on a public host may not be a redirect URI (the authorization code would travel in clear).
    assert portal_redirect_uris(Settings(public_url="http://shop.example")) == configured
    only = Settings(merchant_portal_redirect_uris="https://portal.example/cb", public_url="https://api.example")
    assert portal_redirect_uris(only) == ["https://portal.example/cb", "https://api.example/portal/callback"]
