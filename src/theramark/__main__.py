import sys

from theramark.cli import main

sys.exit(main())
