"""`python -m bsnas` is the `bsnas` command."""

import sys

from bsnas.cli import main

sys.exit(main())
