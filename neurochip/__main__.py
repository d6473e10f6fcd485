import sys

from neurochip.cli import main

sys.exit(main())
