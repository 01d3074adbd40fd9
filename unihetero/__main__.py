import sys

from unihetero.cli import main

sys.exit(main())
