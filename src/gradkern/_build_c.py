"""cffi build script of the C backend: gradkern._gradkern_c (API mode, out-of-line).

setup.py names `ffibuilder` here in cffi_modules, so `pip install .` compiles it. The
declarations are the enum generated from src/gradkern/contract.py followed by
csrc/gradkern.h, read verbatim as the cdef; the code is csrc/gradkern.c, one translation
unit that includes the ISA descriptions and the *_real.c templates.

The contract is not repeated in C: at build time `gk_contract.h` (the enum of
`contract.c_declarations()` and the #defines of `contract.c_constants()`) is written into a
generated include directory, build/gk_include for a setuptools build (an editable install,
a wheel, a build from the sdist) or OUTDIR/gk_include for a standalone one. contract.py is
loaded by file path: the package itself is not importable during its own build.

Flags: -O3, OpenMP when a probe compile with -fopenmp works, runtime CPU dispatch inside
the C code (no -march), -march=native only with GRADKERN_NATIVE=1. The extension is marked
optional: without a working C compiler the package still installs and the backend
registry reports why `c` is missing.

GRADKERN_SANITIZE=1 builds with AddressSanitizer and UndefinedBehaviorSanitizer instead;
run as a script it builds into a separate directory (see `make sanitize`):
    GRADKERN_SANITIZE=1 python src/gradkern/_build_c.py build/sanitize
"""

from __future__ import annotations

import importlib.util
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
CONTRACT = ROOT / "src" / "gradkern" / "contract.py"
MODULE = "gradkern._gradkern_c"
GENERATED = "gk_include"  # the generated include directory, inside the build directory

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


def load_contract():
    """src/gradkern/contract.py as a module of its own (not through the package)."""
    spec = importlib.util.spec_from_file_location("_gradkern_build_contract", CONTRACT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def write_if_changed(path: Path, text: str) -> None:
    """Write `text` to `path` unless it already holds it (an unchanged header keeps its
    mtime, so it triggers no rebuild); atomically, for builds running side by side."""
    if path.is_file() and path.read_text() == text:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def generate(include_dir: Path) -> str:
    """Write gk_contract.h into include_dir; return the enum text for the cdef."""
    contract = load_contract()
    enum = contract.c_declarations()
    header = ("/* gk_contract.h: the codes, columns and constants of src/gradkern/contract.py, "
              "written by\n   _build_c.py at build time; included by gradkern.c before "
              "gradkern.h. */\n#ifndef GK_CONTRACT_H\n#define GK_CONTRACT_H\n\n"
              f"{enum}\n{contract.c_constants()}\n#endif /* GK_CONTRACT_H */\n")
    write_if_changed(include_dir / "gk_contract.h", header)
    return enum


def make_builder(build_dir: Path | None = None) -> FFI:
    """The cffi builder; its generated header goes to build_dir/gk_include (default:
    ROOT/build, where setuptools builds)."""
    base = Path(build_dir) if build_dir is not None else ROOT / "build"
    include_dir = base.resolve() / GENERATED  # absolute: cffi compiles from inside tmpdir
    enum = generate(include_dir)
    cflags, lflags, info = flags()
    builder = FFI()
    builder.cdef(enum + (CSRC / "gradkern.h").read_text())
    source = f"#define GK_BUILD_INFO {json.dumps(info)}\n#include \"gradkern.c\"\n"
    builder.set_source(
        MODULE,
        source,
        include_dirs=[str(include_dir), str(CSRC)],
        extra_compile_args=cflags,
        extra_link_args=lflags,
        libraries=["m"],
        depends=sorted([str(p) for p in CSRC.glob("*.[ch]")]
                       + [str(include_dir / "gk_contract.h"), str(CONTRACT)]),
        optional=True,  # no compiler: install without the C backend
    )
    return builder


def ffibuilder() -> FFI:
    """What setup.py's cffi_modules names: cffi calls it to get the builder."""
    return make_builder()


if __name__ == "__main__":
    # a standalone build into a directory of its own (the sanitizer build)
    outdir = Path(sys.argv[1] if len(sys.argv) > 1 else "build/c")
    outdir.mkdir(parents=True, exist_ok=True)
    path = make_builder(outdir).compile(tmpdir=str(outdir), verbose=True)
    print(path)
