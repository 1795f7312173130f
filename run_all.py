#!/usr/bin/env python3
"""Run the benchmark: every selected method x domain x seed, then the results store and the reports.

    python run_all.py                          # the generated mini suite, on the CPU, in minutes
    python run_all.py --suite decathlon --data-root /data/decathlon-1.0 --pretrained resnet26.pt
    python run_all.py --dry-run                # the plan as a table
    python run_all.py --help

The logic lives in decathlon/runner.py.
"""

import sys

from decathlon.runner import main

if __name__ == "__main__":
    sys.exit(main())
