import sys

from syncsde.eval.cli import main

sys.exit(main())
