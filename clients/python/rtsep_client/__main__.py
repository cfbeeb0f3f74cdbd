import sys

from rtsep_client.cli import main

sys.exit(main())
