"""`python -m switchboard`: the CLI."""

from switchboard.cli import main

main()
