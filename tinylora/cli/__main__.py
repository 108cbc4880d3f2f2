"""`python -m tinylora.cli ...` is the same as the `tinylora` command."""

import sys

from tinylora.cli.main import main

sys.exit(main())
