import sys

from wsi_mil.cli import main

sys.exit(main())
