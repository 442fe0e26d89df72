"""``python -m picool.cli``: the ``picool`` command."""

from picool.cli import main

main()
