"""python -m gradkern.bench ... (the same as `gradkern bench ...`)."""

from . import main

if __name__ == "__main__":
    raise SystemExit(main())
