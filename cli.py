"""``python cli.py ...``: the ``ndeconv`` command line, for users of the paper's ``python main.py``."""

from _ndeconv_entry import main

if __name__ == "__main__":
    main()
