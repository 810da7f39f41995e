import sys

from pixelpost.app.cli import main

sys.exit(main())
