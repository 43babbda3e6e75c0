"""``python -m silverlabel`` is the ``silverlabel`` command."""

from .cli import main

main()
