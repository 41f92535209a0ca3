"""`python -m vcam` is the `vcam` command."""

import sys

try:
    from vcam.cli import main

    code = main()
except KeyboardInterrupt:  # Ctrl-C before main() could catch it
    code = 130
sys.exit(code)
