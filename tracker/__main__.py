"""`python -m tracker`: the same as `pixelpost tracker`."""

import sys

from pixelpost.app.cli import main

sys.exit(main(["tracker", *sys.argv[1:]]))
