import sys

from smaskd.cli import main

sys.exit(main())
