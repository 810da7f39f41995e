import sys

from pixelpost.cli import main

sys.exit(main())
