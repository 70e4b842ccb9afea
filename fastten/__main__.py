"""``python -m fastten``: the command line (``fastten.cli``)."""

import sys

from .cli import main

sys.exit(main())
