"""``python -m service`` is the ``paperboy`` command."""

import sys

from .cli import main

if __name__ == "__main__":  # not when a child process (spawn) imports it
    sys.exit(main())
