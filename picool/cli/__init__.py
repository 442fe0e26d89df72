"""The ``picool`` command: dev, serve, migrate, simulate and admin."""

from picool.cli import _serve, _simulate  # noqa: F401  (their commands join the group)
from picool.cli._admin import run_admin
from picool.cli._group import main

# The subsystems' admin commands join `picool admin` when it is first used (see picool.cli._admin).

__all__ = ["main", "run_admin"]
