"""``python -m refine_cli`` runs the ``refine-masks`` command (e.g. where the package is not installed)."""

from .cli import main

main()
