"""``picool admin`` lists every subsystem's commands whichever module was imported first."""

from __future__ import annotations

import subprocess
import sys

import pytest

EXPECTED = ("create-client", "create-operator", "rotate-key", "reindex-tasks")


@pytest.mark.parametrize("first", ["auth.app", "run.app", "coupon.app", "gateway.app", "picool.cli"])
def test_admin_commands_whatever_was_imported_first(first: str) -> None:
    code = (
        f"import {first}\n"
        "from click.testing import CliRunner\n"
        "from picool.cli import main\n"
        "print(CliRunner().invoke(main, ['admin', '--help']).output)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True).stdout
    for name in EXPECTED:
        assert name in out, (first, out)
