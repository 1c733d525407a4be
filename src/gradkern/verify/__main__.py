import sys

from gradkern.cli import run_guarded
from gradkern.verify.cli import main

sys.exit(run_guarded(main))
