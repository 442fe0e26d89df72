"""The auth subsystem as the gateway mounts it, and its ``picool admin`` commands."""

from __future__ import annotations

from typing import Any

import click

from auth import controllers, service
from auth.service import _passwords
from picool.cli import run_admin
from picool.kernel import Kernel
from picool.subsystem import Subsystem


async def _startup(kernel: Kernel) -> None:
    """Load scripts, make sure a signing key and the built-in clients exist, and hand the in-process
    verifier our JWKS directly (no HTTP round trip to ourselves)."""
    kernel.scripts.register_package("auth")
    svc = service.AuthServices.build(kernel)
    kernel.services["auth"] = svc
    service.bind_id_source(kernel.engine, kernel.ids.next_id)
    async with kernel.sessionmaker() as session, session.begin():
        await service.ensure_key(session, kernel.settings.secret_key)
    async with kernel.sessionmaker() as session, session.begin():
        await service.seed_builtin_clients(session, kernel.settings, kernel.service_secret())
    await svc.keys.reload()
    kernel.jwks_provider = svc.keys.jwks_now

    async def learn_new_key() -> None:
        await kernel.verifier.refresh(force=True)

    svc.keys.on_new_key = learn_new_key
    await _passwords.warm_up()


def create(kernel: Kernel) -> Subsystem:
    """Build the auth subsystem for kernel's process."""
    return Subsystem(
        name="auth",
        route_handlers=[
            controllers.AuthController,
            controllers.OAuth2Controller,
            controllers.jwks,
            controllers.metadata,
            controllers.login_page,
            controllers.login_submit,
        ],
        on_startup=[_startup],
        state={"keep_tables": ["signing_keys", "oauth_clients"]},
    )


@click.command("rotate-key")
def rotate_key_cmd() -> None:
    """Add a new signing key; the previous one stays published until its tokens have expired."""

    async def go(kernel: Kernel) -> str:
        async with kernel.sessionmaker() as session, session.begin():
            return await service.rotate_key(session, kernel.settings.secret_key)

    click.echo(f"new signing key: {run_admin(go)}")


@click.command("create-operator")
@click.option("--email", required=True)
@click.option("--password", required=True, help="8 to 256 characters.")
@click.option("--display-name", default="Operator", show_default=True)
def create_operator_cmd(email: str, password: str, display_name: str) -> None:
    """Create an operator account."""

    async def go(kernel: Kernel) -> str:
        async with kernel.sessionmaker() as session, session.begin():
            return await service.create_operator(session, email, password, display_name, ids=kernel.ids.next_id)

    try:
        user_id = run_admin(go)
    except service.EmailTaken as exc:
        raise click.ClickException(exc.detail) from exc
    except Exception as exc:  # a DomainError with a readable detail (bad email, short password)
        detail = getattr(exc, "detail", None)
        if detail:
            raise click.ClickException(str(detail)) from exc
        raise
    click.echo(f"operator created: {user_id}")


@click.command("create-client")
@click.option("--client-id", required=True)
@click.option("--name", default=None, help="Display name (default: the client id).")
@click.option("--confidential/--public", default=True, show_default=True, help="Confidential clients get a secret.")
@click.option("--redirect-uri", "redirect_uris", multiple=True, help="Exact redirect URI (repeatable).")
@click.option(
    "--grant",
    "grants",
    multiple=True,
    type=click.Choice(["authorization_code", "refresh_token", "client_credentials"]),
    help="Allowed grant (repeatable). Default: authorization_code + refresh_token, or client_credentials "
    "for a confidential client without redirect URIs.",
)
@click.option("--scope", "scopes", multiple=True, help="Allowed scope (repeatable).")
def create_client_cmd(
    *,
    client_id: str,
    name: str | None,
    confidential: bool,
    redirect_uris: tuple[str, ...],
    grants: tuple[str, ...],
    scopes: tuple[str, ...],
) -> None:
    """Register an OAuth2 client; a confidential client's secret is printed once and stored only hashed."""
    grant_list = list(grants)
    if not grant_list:
        grant_list = (
            ["client_credentials"] if confidential and not redirect_uris else ["authorization_code", "refresh_token"]
        )

    async def go(kernel: Kernel) -> str | None:
        async with kernel.sessionmaker() as session, session.begin():
            return await service.create_client(
                session,
                client_id,
                name or client_id,
                confidential=confidential,
                redirect_uris=list(redirect_uris),
                grant_types=grant_list,
                scopes=list(scopes),
            )

    try:
        secret = run_admin(go)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from exc
    click.echo(f"client created: {client_id} ({'confidential' if confidential else 'public'}; {' '.join(grant_list)})")
    if secret:
        click.echo(f"client secret (shown once): {secret}")


def admin_commands() -> list[Any]:
    """The ``picool admin`` commands of the auth subsystem."""
    return [rotate_key_cmd, create_operator_cmd, create_client_cmd]
