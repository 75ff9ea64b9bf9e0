"""``python -m diffmodel``: see :mod:`diffmodel.cli`."""

import sys

from .cli import main

sys.exit(main())
