"""`python -m otel_s3_bridge`: the only place that exits the process with a status."""

import sys

from .cli import main

sys.exit(main())
