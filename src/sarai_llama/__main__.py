"""``python -m sarai_llama``: the same as the ``sarai-llama`` command."""

import sys

from .cli import main

sys.exit(main())
