"""`python -m tradeoff`: the same as the `tradeoff` command."""

from tradeoff.launch import main

main()
