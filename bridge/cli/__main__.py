"""``python -m bridge.cli``: the psbridge command line."""

from bridge.cli import main

main()
