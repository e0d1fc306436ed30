"""``python -m aoe`` is the ``aoe`` command."""

from .cli import main

main()
