"""`python -m sarcoscope.cli`."""

from sarcoscope.cli import main

main()
