import sys

from cfrec.cli import main

sys.exit(main())
