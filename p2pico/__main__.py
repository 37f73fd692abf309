"""``python -m p2pico`` is the ``p2pico`` command."""

import sys

from p2pico.cli import main

sys.exit(main())
