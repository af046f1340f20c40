"""`python -m sevgg_gui.cli` (torchrun uses it)."""

import sys

from . import main

sys.exit(main())
