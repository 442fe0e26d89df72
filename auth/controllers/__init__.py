"""HTTP controllers of the auth subsystem: the JSON API, the OAuth2 endpoints and the login page."""

from __future__ import annotations

from auth.controllers._api import AuthController, jwks, metadata
from auth.controllers._oauth2 import OAuth2Controller
from auth.controllers._pages import login_page, login_submit

__all__ = ["AuthController", "OAuth2Controller", "jwks", "login_page", "login_submit", "metadata"]
