"""`gradkern check` lives in `gradkern.verify`; this module keeps `python -m gradkern.check`
and the CLI's delegation working."""

from __future__ import annotations

import sys

from .verify import CHECKS, Cell, Worst, main, matrix, report, run, run_cell

__all__ = ["CHECKS", "Cell", "Worst", "main", "matrix", "report", "run", "run_cell"]

if __name__ == "__main__":
    from gradkern.cli import run_guarded

    sys.exit(run_guarded(main))
