"""`python -m sarcoscope`: the `sarcoscope` command, for environments whose scripts folder is not on PATH."""

from sarcoscope.cli import main

main()
