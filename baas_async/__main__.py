"""``python -m baas_async``: the same as the ``baas-async`` command."""

import sys

from ._cli import main

sys.exit(main())
