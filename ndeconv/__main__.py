"""``python -m ndeconv``: the same command line as ``ndeconv`` (the same entry point)."""

from _ndeconv_entry import main

main()
