"""``python -m latentatlas`` runs the command-line tool."""

from latentatlas.cli import main

main()
