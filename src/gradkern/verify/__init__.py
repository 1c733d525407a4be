"""One verification package: the tolerance policy and every check `gradkern check`, the
tests and the benchmarks run.

- `tolerance`    THE policy: |x − ref| ≤ k·u·S elementwise (`Worst`, `assert_close`), and
                 the named whole-tensor bounds; no other module carries a tolerance.
- `kernels`      every kernel against the float64 NumPy reference, case by case.
- `finite_diff`  central finite differences of the loss (float64).
- `magnitudes`   the running-error scale S of a whole pass and of optimizer steps.
- `torch_ref`    PyTorch as referee (the torch.nn twin is built by `gradkern.torchref`).
- `report`       the cells, the Markdown matrix and the JSON report.
- `cli`          the check registry, `run()` and `main()` (`gradkern check`).
"""

from __future__ import annotations

from .cli import CHECKS, Check, main, run, run_cell
from .common import DTYPES, Context, NotApplicable, Skipped, c_tiles
from .report import Cell, matrix, report
from .tolerance import Worst, assert_close

__all__ = ["CHECKS", "DTYPES", "Cell", "Check", "Context", "NotApplicable", "Skipped", "Worst",
           "assert_close", "c_tiles", "main", "matrix", "report", "run", "run_cell"]
