import sys

from rackforge.cli import main

sys.exit(main())
