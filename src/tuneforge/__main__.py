"""``python -m tuneforge`` (and ``torchrun ... -m tuneforge train``) runs the CLI."""

import sys

from tuneforge.cli import main

sys.exit(main())
