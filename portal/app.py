"""The merchant portal as the gateway serves it: two pages, their scripts and styles, and a config JSON.

The portal is a browser client of the public API (it signs in through ``/oauth2/authorize`` like any
other client), so nothing here touches a subsystem: the handlers only hand out files that ship inside
the package (no build step) and the settings the page needs (the map's tile source).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from litestar import MediaType, Response, get
from litestar.datastructures import CacheControlHeader
from litestar.static_files import create_static_files_router

from picool.settings import Settings

STATIC = Path(__file__).parent / "static"
CLIENT_ID = "merchant-portal"
# What the portal asks for; the refresh token comes with every code grant (rotating, see docs).
SCOPE = "profile email offline_access"


def tile_origin(tile_url: str) -> str:
    """The CSP source that allows the tiles of ``tile_url`` (``{s}`` subdomains become a wildcard);
    '' when the tiles come from this origin or there are none."""
    if not tile_url or tile_url.startswith("/"):
        return ""
    parts = urlsplit(tile_url.replace("{s}.", "wildcard-subdomain."))
    host = (parts.netloc or "").replace("wildcard-subdomain.", "*.")
    return f"{parts.scheme}://{host}" if parts.scheme and host else ""


def content_security_policy(settings: Settings) -> str:
    """Scripts, styles and API calls from this origin only; images also from the tile server."""
    images = " ".join(filter(None, ["'self'", "data:", tile_origin(settings.portal_tile_url)]))
    return (
        "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        f"img-src {images}; frame-ancestors 'none'; base-uri 'none'; form-action 'self'"
    )


def portal_config(settings: Settings) -> dict[str, Any]:
    """What ``/portal/config.json`` tells the page."""
    lat, lon = settings.map_center
    return {
        "client_id": CLIENT_ID,
        "scope": SCOPE,
        "tile_url": settings.portal_tile_url,
        "tile_attribution": settings.portal_tile_attribution,
        "map_center": {"lat": lat, "lon": lon},
    }


def route_handlers(settings: Settings) -> list[Any]:
    """The portal's routes for ``settings``: ``/portal`` (the app), ``/portal/callback`` (the OAuth2
    redirect URI), ``/portal/config.json`` and ``/portal/assets/...``."""
    page_headers = {
        "Content-Security-Policy": content_security_policy(settings),
        # The pages are tiny and change with every release: always revalidate.
        "Cache-Control": "no-cache",
    }
    index_html = (STATIC / "index.html").read_bytes()
    callback_html = (STATIC / "callback.html").read_bytes()
    config = portal_config(settings)

    @get("/portal", media_type=MediaType.HTML, include_in_schema=False)
    async def portal_index() -> Response[bytes]:
        """The portal application page (``/portal`` and ``/portal/``: the router ignores the slash, and the
        page links its files by absolute paths so either works)."""
        return Response(index_html, media_type=MediaType.HTML, headers=page_headers)

    @get("/portal/callback", media_type=MediaType.HTML, include_in_schema=False)
    async def portal_callback() -> Response[bytes]:
        """The redirect URI of the ``merchant-portal`` client: exchanges the code for tokens in the browser."""
        return Response(callback_html, media_type=MediaType.HTML, headers=page_headers)

    @get("/portal/config.json", include_in_schema=False)
    async def portal_config_json() -> Response[dict[str, Any]]:
        """The client id, scope and map settings the page starts with."""
        return Response(config, media_type=MediaType.JSON, headers={"Cache-Control": "no-cache"})

    assets = create_static_files_router(
        path="/portal/assets",
        directories=[STATIC / "assets"],
        name="portal-assets",
        cache_control=CacheControlHeader(no_cache=True),
        include_in_schema=False,
    )
    return [portal_index, portal_callback, portal_config_json, assets]
