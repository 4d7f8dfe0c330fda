"""`python -m recog.datasets.importers FORMAT SRC... --out DIR`: the same as `recog data import`."""

import sys

from recog.datasets.importers.cli import main

sys.exit(main())
