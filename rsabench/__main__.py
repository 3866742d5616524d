"""``python -m rsabench``: the command line (what cluster workers call with the interpreter they run)."""

from .cli import main

main()
