"""``python -m sst`` (also what ``torchrun -m sst train ...`` runs)."""

import sys

from sst.cli import main

sys.exit(main())
