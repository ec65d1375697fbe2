import sys

from msflow.cli import main

sys.exit(main())
