"""python -m gradkern.bench ... (the same as `gradkern bench ...`)."""

from ..cli import run_guarded
from . import main

if __name__ == "__main__":
    raise SystemExit(run_guarded(main))
