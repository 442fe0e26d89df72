"""Request and response bodies of the auth API (msgspec)."""

from __future__ import annotations

from typing import Annotated

import msgspec

Email = Annotated[str, msgspec.Meta(min_length=3, max_length=320)]
Password = Annotated[str, msgspec.Meta(max_length=1024)]  # the 8..256 rule is checked by the service (clear message)
Name = Annotated[str, msgspec.Meta(max_length=400)]


class Location(msgspec.Struct, forbid_unknown_fields=True):
    """WGS84 degrees."""

    lat: Annotated[float, msgspec.Meta(ge=-90.0, le=90.0)]
    lon: Annotated[float, msgspec.Meta(ge=-180.0, le=180.0)]


class RegisterRunner(msgspec.Struct, forbid_unknown_fields=True):
    """POST /api/v1/auth/register."""

    email: Email
    password: Password
    display_name: Name


class RegisterMerchant(msgspec.Struct, forbid_unknown_fields=True):
    """POST /api/v1/auth/merchants."""

    name: Name
    email: Email
    password: Password
    location: Location
    address: Annotated[str, msgspec.Meta(max_length=1200)] | None = None
    category: Annotated[str, msgspec.Meta(max_length=200)] | None = None


class LoginRequest(msgspec.Struct, forbid_unknown_fields=True):
    """POST /api/v1/auth/login."""

    email: Annotated[str, msgspec.Meta(max_length=1024)]
    password: Password
    client_id: Annotated[str, msgspec.Meta(min_length=1, max_length=100)]


class UserCreated(msgspec.Struct):
    """A new runner account."""

    user_id: str


class MerchantCreated(msgspec.Struct):
    """A new merchant and its owner account."""

    merchant_id: str
    user_id: str


class TokenResponse(msgspec.Struct, omit_defaults=True):
    """RFC 6749 §5.1 token response."""

    access_token: str
    token_type: str
    expires_in: int
    scope: str
    refresh_token: str | None = None


class Me(msgspec.Struct):
    """The signed-in account."""

    user_id: str
    email: str
    display_name: str
    role: str
    merchant_id: str | None


class AccountStatus(msgspec.Struct):
    """An account's frozen flag after an operator changed it."""

    user_id: str
    role: str
    frozen: bool
