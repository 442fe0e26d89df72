"""The ``picool`` command group, and what its commands share: settings, the stack to reach, messages."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from types import FrameType
from typing import Any

import click

from picool.settings import Settings, SettingsError
from picool.stack import EmbeddedStack, StackError, read_running_stack

URL_FIELDS = ("database_url", "redis_url", "kafka_bootstrap")


def _echo(msg: str) -> None:
    click.echo(msg, err=True)


def _terminate_as_exit(signum: int, frame: FrameType | None) -> None:
    # SIGTERM unwinds like Ctrl-C, so every `finally` (stopping the servers) runs.
    raise SystemExit(0)


def _load_settings(**overrides: Any) -> Settings:
    try:
        return Settings.from_env(**{k: v for k, v in overrides.items() if v is not None})
    except SettingsError as exc:
        raise click.UsageError(str(exc)) from exc


@contextlib.contextmanager
def _stack_for(settings: Settings, *, kafka: bool, quiet: bool = False) -> Iterator[Settings]:
    """Settings whose URLs reach real servers: the environment's, a running ``picool dev``'s, or embedded
    servers started for the duration of the block."""
    if not settings.uses_embedded:
        yield settings
        return
    running = read_running_stack(settings.data_path)
    if running is not None:
        yield settings.with_(**{f: settings.__getattribute__(f) or running.get(f, "") for f in URL_FIELDS})
        return
    stack = EmbeddedStack(
        settings.data_path,
        postgres=not settings.database_url,
        redis=not settings.redis_url,
        kafka=kafka and not settings.kafka_bootstrap,
        log=(lambda m: None) if quiet else _echo,
    )
    try:
        stack.start()
    except StackError as exc:
        raise click.ClickException(str(exc)) from exc
    try:
        yield settings.with_(
            database_url=settings.database_url or stack.database_url,
            redis_url=settings.redis_url or stack.redis_url,
            kafka_bootstrap=settings.kafka_bootstrap or stack.kafka_bootstrap or "127.0.0.1:9",
        )
    finally:
        stack.stop()


@click.group()
@click.version_option(package_name="picool")
def main() -> None:
    """Picool: running tasks, coupons and single sign-on."""
