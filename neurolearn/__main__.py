"""``python -m neurolearn ...`` is the ``neurolearn`` command."""

import sys

from .cli import main

sys.exit(main())
