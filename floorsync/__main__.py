"""``python -m floorsync``: the ``floorsync`` command."""

import sys

from floorsync.cli import main

sys.exit(main())
