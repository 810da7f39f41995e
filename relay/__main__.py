"""`python -m relay`: the same as `pixelpost relay`."""

import sys

from pixelpost.app.cli import main

sys.exit(main(["relay", *sys.argv[1:]]))
