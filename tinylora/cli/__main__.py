"""`python -m tinylora.cli ...` is the same as the `tinylora` command."""

import sys

from tinylora.cli.commands import main

sys.exit(main())
