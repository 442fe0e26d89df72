"""Applying the Alembic migrations programmatically."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config

import migrations


def alembic_config(database_url: str) -> Config:
    """An Alembic config pointing at the packaged migrations and ``database_url``."""
    here = Path(migrations.__file__).parent
    cfg = Config()
    cfg.set_main_option("script_location", str(here))
    cfg.attributes["database_url"] = database_url
    return cfg


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply every migration up to ``revision`` (blocking; call it outside a running event loop)."""
    command.upgrade(alembic_config(database_url), revision)
