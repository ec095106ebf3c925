import sys

from eeki_label.cli import main

sys.exit(main())
