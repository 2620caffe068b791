"""``python -m controller`` is ``flagroll``."""

import sys

from controller.cli import main

sys.exit(main())
