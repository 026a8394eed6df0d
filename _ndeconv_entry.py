"""The ``ndeconv`` console script: Ctrl-C at any moment, even while torch is still importing, ends
with one line and exit status 130 instead of a traceback.

It lives outside the package because importing anything in ``ndeconv`` first imports torch.
"""

import sys


def main() -> None:
    """Import and run the command line, turning an interrupt into ``interrupted`` and exit 130."""
    try:
        from ndeconv.cli import app

        app()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        raise SystemExit(130) from None
