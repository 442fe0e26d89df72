"""Accounts: register runners and merchants, create operators, authenticate, freeze."""

from __future__ import annotations

import weakref
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession

from auth import domain
from auth.models import Merchant, User
from auth.service import _passwords
from auth.service._errors import AccountFrozen, EmailTaken, InvalidCredentials
from picool.errors import InvalidRequest, NotFound

IdSource = Callable[[], int]

# Which id generator serves which engine: lets create_operator(session, ...) make ids without a kernel
# argument. Filled by the auth startup hook and by the admin commands; weak so test apps can go away.
_id_sources: weakref.WeakKeyDictionary[AsyncEngine, IdSource] = weakref.WeakKeyDictionary()


def bind_id_source(engine: AsyncEngine, source: IdSource) -> None:
    """Make ``source`` the id generator for sessions on ``engine``."""
    _id_sources[engine] = source


def _next_id(session: AsyncSession, ids: IdSource | None) -> int:
    if ids is not None:
        return ids()
    bind = session.bind
    source = _id_sources.get(bind) if isinstance(bind, AsyncEngine) else None
    if source is None:
        raise RuntimeError("no id generator bound to this engine (is the auth subsystem started?)")
    return source()


def _rule(exc: domain.AuthRuleError) -> InvalidRequest:
    return InvalidRequest(
        exc.message and f"{exc.field}: {exc.message}", errors=[{"key": exc.field, "message": exc.message}]
    )


@dataclass(frozen=True, slots=True)
class NewAccount:
    """Validated, normalised input for a new account."""

    email: str
    password: str
    display_name: str


def validate_account(email: str, password: str, display_name: str | None) -> NewAccount:
    """Normalise and check registration input; 400 ``invalid_request`` naming the failing field."""
    try:
        clean_email = domain.normalise_email(email)
        domain.check_password(password)
        name = domain.clean_text("display_name", display_name, max_len=domain.DISPLAY_NAME_MAX)
    except domain.AuthRuleError as exc:
        raise _rule(exc) from exc
    assert name is not None
    return NewAccount(clean_email, password, name)


async def _insert_user(session: AsyncSession, user: User) -> None:
    if await session.scalar(select(User.id).where(User.email == user.email)) is not None:
        raise EmailTaken("An account with this email already exists.")
    try:
        async with session.begin_nested():  # a lost race on the unique email becomes 409, not 500
            session.add(user)
            await session.flush()
    except IntegrityError as exc:
        raise EmailTaken("An account with this email already exists.") from exc


async def _add_user(
    session: AsyncSession, acc: NewAccount, role: str, ids: IdSource | None, *, merchant_id: int | None = None
) -> User:
    """A new unfrozen account with ``acc``'s email, display name and (hashed) password; 409 if the email is taken."""
    user = User(
        id=_next_id(session, ids),
        email=acc.email,
        password_hash=await _passwords.hash_password(acc.password),
        display_name=acc.display_name,
        role=role,
        merchant_id=merchant_id,
        frozen=False,
    )
    await _insert_user(session, user)
    return user


async def register_runner(
    session: AsyncSession, email: str, password: str, display_name: str, *, ids: IdSource | None = None
) -> User:
    """Create a runner account. 400 on bad input, 409 ``email_taken`` when the email is in use."""
    return await _add_user(session, validate_account(email, password, display_name), domain.ROLE_RUNNER, ids)


async def register_merchant(
    session: AsyncSession,
    *,
    name: str,
    email: str,
    password: str,
    lat: float,
    lon: float,
    address: str | None,
    category: str | None,
    ids: IdSource | None = None,
) -> tuple[Merchant, User]:
    """Create a merchant and its owner account (role ``merchant``) in one unit of work."""
    try:
        shop = domain.clean_text("name", name, max_len=100)
        addr = domain.clean_text("address", address, max_len=300, required=False)
        cat = domain.clean_text("category", category, max_len=50, required=False)
    except domain.AuthRuleError as exc:
        raise _rule(exc) from exc
    assert shop is not None
    if not (-90.0 <= lat <= 90.0 and -180.0 <= lon <= 180.0):
        raise InvalidRequest("location: lat must be in [-90, 90] and lon in [-180, 180]")
    acc = validate_account(email, password, shop)
    merchant = Merchant(id=_next_id(session, ids), name=shop, lat=lat, lon=lon, address=addr, category=cat)
    if await session.scalar(select(User.id).where(User.email == acc.email)) is not None:
        raise EmailTaken("An account with this email already exists.")
    session.add(merchant)
    await session.flush()
    user = await _add_user(session, acc, domain.ROLE_MERCHANT, ids, merchant_id=merchant.id)
    return merchant, user


async def create_operator(
    session: AsyncSession, email: str, password: str, display_name: str = "Operator", *, ids: IdSource | None = None
) -> str:
    """Create an operator account and return its user id (the caller commits)."""
    user = await _add_user(session, validate_account(email, password, display_name), domain.ROLE_OPERATOR, ids)
    return str(user.id)


async def authenticate(session: AsyncSession, email: str, password: str) -> User:
    """The account whose email and password these are.

    Unknown email and wrong password both raise :class:`InvalidCredentials` after the same argon2 work.
    A correct password for a frozen account raises :class:`AccountFrozen`. A hash made with weaker
    parameters than today's is replaced.
    """
    try:
        clean = domain.normalise_email(email)
    except domain.AuthRuleError:
        clean = None
    user = None
    if clean is not None and len(password) <= domain.PASSWORD_MAX:
        user = await session.scalar(select(User).where(User.email == clean))
    ok, needs_rehash = await _passwords.verify_password(
        user.password_hash if user else None, password[: domain.PASSWORD_MAX]
    )
    if user is None or not ok:
        raise InvalidCredentials("The email or password is wrong.")
    if user.frozen:
        raise AccountFrozen("This account is frozen; contact support.")
    if needs_rehash:
        user.password_hash = await _passwords.hash_password(password)
        user.updated_at = datetime.now(UTC)
        await session.flush()
    return user


async def get_user(session: AsyncSession, user_id: int) -> User | None:
    """The account with this id, or None."""
    return await session.get(User, user_id)


async def set_frozen(session: AsyncSession, user_id: int, frozen: bool) -> User:
    """Freeze or unfreeze an account (404 when it does not exist). Revoking its tokens is the caller's part."""
    result = await session.execute(
        update(User).where(User.id == user_id).values(frozen=frozen, updated_at=func.now()).returning(User.id)
    )
    if result.scalar_one_or_none() is None:
        raise NotFound("No such account.")
    user = await session.get(User, user_id, populate_existing=True)
    assert user is not None
    return user
