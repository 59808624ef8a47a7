"""``python -m service`` is the ``paperboy`` command."""

import sys

from .cli import main

sys.exit(main())
