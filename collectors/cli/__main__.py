"""`python -m collectors.cli`: the same as the `perfdeck` command."""
from collectors.cli import main

main()
