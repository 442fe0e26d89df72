"""The ``picool`` command: dev, serve, migrate, simulate and admin."""

from picool.cli import _serve, _simulate  # noqa: F401  (their commands join the group)
from picool.cli._admin import register_admin_commands, run_admin
from picool.cli._group import main

# After run_admin is bound here: the subsystems' app modules import it from picool.cli.
register_admin_commands()

__all__ = ["main", "run_admin"]
