"""``python -m deepalign.cli``: the same command, for ``accelerate launch -m deepalign.cli train ...``."""

import sys

from deepalign.cli import main

sys.exit(main())
