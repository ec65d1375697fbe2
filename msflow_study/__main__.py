import sys

from msflow_study.cli import main

sys.exit(main())
