"""``python -m foldkit.cli``: the same as the ``foldkit`` command."""

import sys

from foldkit.cli.main import main

sys.exit(main())
