"""Installing and importing without a C compiler: the C backend is reported, not fatal."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_install_without_a_compiler(tmp_path):
    """`pip install .` with CC=/bin/false succeeds; the package then imports, trains on
    the other backends, and `gradkern backends` says why c is unavailable."""
    # a copy of the source tree without build output (an editable install leaves the
    # extension beside the sources, and pip would ship it as package data)
    src = tmp_path / "src-tree"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".git", "build", "*.so", "*.o", "__pycache__", "*.egg-info", ".*_cache",
        "_gradkern_c*.c", ".benchmarks", ".hypothesis"))
    target = tmp_path / "site"
    env = dict(os.environ, CC="/bin/false", PIP_DISABLE_PIP_VERSION_CHECK="1")
    done = subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation",
         "--no-cache-dir", "--target", str(target), str(src)],
        capture_output=True, text=True, timeout=600, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert not list((target / "gradkern").glob("_gradkern_c*.so"))
    script = (
        "import gradkern as gk, numpy as np\n"
        "st = gk.backends.status()\n"
        "assert st['numpy'] == 'available', st\n"
        "assert st['c'] != 'available', st\n"
        "m = gk.MLP([3, 4, 2], loss='cross_entropy')\n"
        "m.fit(np.ones((8, 3)), np.arange(8) % 2, epochs=1, progress=False)\n"
        "from gradkern.cli import main\n"
        "main(['backends'])\n")
    run_env = dict(os.environ, PYTHONPATH=str(target))
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300, env=run_env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    line = next(ln for ln in done.stdout.splitlines() if ln.startswith("| c "))
    assert "| no " in line and "extension" in line.lower(), line
