"""Print where a finished run's results are and its headline numbers: the text every
`snakemake` run ends with (segflow/run_summary.py), for a run finished earlier.

    python scripts/demo_summary.py results/demo [CONFIGFILE ...]
"""

from __future__ import annotations

import sys

from segflow.run_summary import write_run_summary

if __name__ == "__main__":
    results = sys.argv[1] if len(sys.argv) > 1 else "results/demo"
    write_run_summary(results, sys.argv[2:] or ["config/config.yaml"], stream=sys.stdout)
