"""``python -m floorsync``: the ``floorsync`` command."""

import sys

from floorsync.edge.cli import main

sys.exit(main())
