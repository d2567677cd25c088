import sys

from syncsde.cli import main

sys.exit(main())
