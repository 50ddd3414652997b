"""`python -m tradeoff`: the same as the `tradeoff` command."""

from tradeoff.cli import main

main()
