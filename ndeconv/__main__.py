"""``python -m ndeconv``: the same command line as ``ndeconv``."""

from .cli import main

main()
