"""``python -m llavac.cli``: the command line, for launchers such as ``torchrun``."""

import sys

from llavac.cli import main

sys.exit(main())
