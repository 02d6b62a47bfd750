"""``python -m mudpuppy.runtime CONFIG_OR_BUNDLE``: what every backend runs in the container."""

import sys

from mudpuppy.runtime.entry import main

sys.exit(main())
