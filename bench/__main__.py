"""``python -m bench``: run the per-stage benchmark (see ``bench/run_bench.py``)."""

import sys

from bench.run_bench import main

sys.exit(main())
