"""cffi build script of the C backend: gradkern._gradkern_c (API mode, out-of-line).

setup.py names `ffibuilder` here in cffi_modules, so `pip install .` compiles it. The
declarations are csrc/gradkern.h, read verbatim as the cdef; the code is csrc/gradkern.c,
one translation unit that includes the *_real.c templates.

Flags: -O3, OpenMP when a probe compile with -fopenmp works, runtime CPU dispatch inside
the C code (no -march), -march=native only with GRADKERN_NATIVE=1. The extension is marked
optional: without a working C compiler the package still installs and the backend
registry reports why `c` is missing.

GRADKERN_SANITIZE=1 builds with AddressSanitizer and UndefinedBehaviorSanitizer instead;
run as a script it builds into a separate directory (see `make sanitize`):
    GRADKERN_SANITIZE=1 python src/gradkern/_build_c.py build/sanitize
"""

from __future__ import annotations

import json
import os
import shlex
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path

from cffi import FFI

ROOT = Path(__file__).resolve().parents[2]
CSRC = ROOT / "csrc"
MODULE = "gradkern._gradkern_c"

SANITIZE_FLAGS = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all",
                  "-fno-omit-frame-pointer", "-fno-wrapv", "-UNDEBUG", "-g", "-O1"]


def compiler() -> list[str]:
    """The C compiler setuptools will use: $CC, else Python's configured one."""
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(cc)


def probe(flags: list[str], code: str = "int main(void) { return 0; }\n") -> bool:
    """Whether the compiler builds and links `code` with these flags."""
    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "probe.c"
        src.write_text(code)
        try:
            done = subprocess.run([*compiler(), *flags, str(src), "-o", str(Path(tmp) / "a.out")],
                                  capture_output=True, timeout=60)
        except (OSError, subprocess.SubprocessError):
            return False
        return done.returncode == 0


OPENMP_PROBE = """#include <omp.h>
int main(void) { int n = 0;
#pragma omp parallel reduction(+:n)
n += 1;
return n > 0 ? 0 : 1; }
"""


def flags() -> tuple[list[str], list[str], str]:
    """(compile args, link args, build description)."""
    sanitize = os.environ.get("GRADKERN_SANITIZE", "") == "1"
    native = os.environ.get("GRADKERN_NATIVE", "") == "1"
    cflags = ["-std=gnu11", "-ffp-contract=off", "-fno-math-errno"]
    lflags: list[str] = []
    cflags += SANITIZE_FLAGS + ["-DGK_SANITIZE"] if sanitize else ["-O3"]
    if sanitize:
        lflags += ["-fsanitize=address,undefined"]
    if native and probe(["-march=native"]):
        cflags.append("-march=native")
    openmp = probe(["-fopenmp"], OPENMP_PROBE)
    if openmp:
        cflags.append("-fopenmp")
        lflags.append("-fopenmp")
    info = " ".join([*compiler(), *cflags]) + (" (OpenMP)" if openmp else " (no OpenMP)")
    return cflags, lflags, info


def make_builder() -> FFI:
    cflags, lflags, info = flags()
    builder = FFI()
    builder.cdef((CSRC / "gradkern.h").read_text())
    source = f"#define GK_BUILD_INFO {json.dumps(info)}\n#include \"gradkern.c\"\n"
    builder.set_source(
        MODULE,
        source,
        include_dirs=[str(CSRC)],
        extra_compile_args=cflags,
        extra_link_args=lflags,
        libraries=["m"],
        depends=sorted(str(p) for p in CSRC.glob("*.[ch]")),
        optional=True,  # no compiler: install without the C backend
    )
    return builder


ffibuilder = make_builder()

if __name__ == "__main__":
    # a standalone build into a directory of its own (the sanitizer build)
    outdir = Path(sys.argv[1] if len(sys.argv) > 1 else "build/c")
    outdir.mkdir(parents=True, exist_ok=True)
    path = ffibuilder.compile(tmpdir=str(outdir), verbose=True)
    print(path)
