"""`python -m vcam` is the `vcam` command."""

import sys

from vcam.cli import main

sys.exit(main())
