"""Searches over many models on a cluster engine (issue 14 item 5): GridSearchCV over the
gradkern.sklearn estimators under joblib's Dask backend, on a dask.distributed LocalCluster of
two worker processes (one thread each). The cluster runs in a child process with a timeout
(a cluster that hangs must not hang the suite); its results are compared with the same
search run sequentially here."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import gradkern as gk

pytest.importorskip("sklearn", reason="the estimators need scikit-learn")
pytest.importorskip("distributed", reason="dask.distributed is not installed "
                    "(pip install 'dask[distributed]', part of the dev extra)")

# the C backend is the one whose handles must never travel; NumPy's needs no compiling in the
# fresh workers (Numba's pickling is tests/test_sklearn.py's)
BACKENDS = [b for b in gk.backends.available() if b != "numba"]
PARAMS = {"hidden_layer_sizes": [[8], [16]], "learning_rate_init": [0.003, 0.01],
          "backend": BACKENDS[:1]}

SETUP = """
import warnings
import numpy as np
from sklearn.datasets import load_digits
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
import gradkern as gk

warnings.simplefilter("ignore", ConvergenceWarning)
X, y = load_digits(return_X_y=True)
X, y = (X[:240] / 16.0), y[:240]
grid = {k: [tuple(v) if isinstance(v, list) else v for v in vs] for k, vs in PARAMS.items()}

def search(n_jobs):
    est = gk.MLPClassifier(max_iter=15, batch_size=32, random_state=0)
    return GridSearchCV(est, grid, cv=2, n_jobs=n_jobs).fit(X, y)
"""

CLUSTER = """
import os, pickle
import joblib
from distributed import Client, LocalCluster

def fit_on_worker(backend):
    est = gk.MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=1,
                           backend=backend).fit(X, y)
    return os.getpid(), est  # the fitted estimator comes back pickled

def predict_on_worker(est):
    return os.getpid(), est.predict_proba(X).tolist()

if __name__ == "__main__":
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        with joblib.parallel_config(backend="dask"):
            s = search(n_jobs=-1)
        pids = set(client.run(os.getpid).values())
        back = {}
        for b in BACKENDS:
            pid, est = client.submit(fit_on_worker, b, pure=False).result()
            local = gk.MLPClassifier(hidden_layer_sizes=(8,), max_iter=5, random_state=1,
                                     backend=b).fit(X, y)
            wpid, proba = client.submit(predict_on_worker, local, pure=False).result()
            back[b] = {"pid": pid, "worker_pid": wpid, "backend": est.backend,
                       "proba_returned": est.predict_proba(X).tolist(),
                       "proba_sent": proba, "proba_local": local.predict_proba(X).tolist()}
    print("RESULT " + json.dumps({
        "scores": s.cv_results_["mean_test_score"].tolist(),
        "params": [{k: list(v) if isinstance(v, tuple) else v for k, v in p.items()}
                   for p in s.cv_results_["params"]],
        "best_proba": s.best_estimator_.predict_proba(X).tolist(),
        "best_backend": s.best_estimator_.backend,
        "pids": sorted(pids), "parent": os.getpid(), "back": back}))
"""


def _namespace() -> dict:
    ns = {"PARAMS": PARAMS, "BACKENDS": BACKENDS}
    exec(SETUP, ns)  # the same data and search as the cluster's child
    return ns


@pytest.mark.slow
def test_grid_search_on_a_two_worker_dask_cluster_matches_the_sequential_search(tmp_path):
    script = tmp_path / "cluster.py"
    script.write_text("import json\n" + f"PARAMS = {PARAMS!r}\nBACKENDS = {BACKENDS!r}\n"
                      + textwrap.dedent(SETUP) + textwrap.dedent(CLUSTER))
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", str(tmp_path / "numba"))
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=300, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT "))
    got = json.loads(line[len("RESULT "):])

    # two worker processes, neither of them the driver
    assert len(got["pids"]) == 2 and got["parent"] not in got["pids"]
    ns = _namespace()
    local = ns["search"](n_jobs=1)
    params = [{k: list(v) if isinstance(v, tuple) else v for k, v in p.items()}
              for p in local.cv_results_["params"]]
    assert got["params"] == params
    assert len(params) == 4
    # deterministic training: every fold of every candidate scores as it does here
    np.testing.assert_array_equal(got["scores"], local.cv_results_["mean_test_score"])
    assert got["best_backend"] == local.best_estimator_.backend
    np.testing.assert_array_equal(got["best_proba"], local.best_estimator_.predict_proba(ns["X"]))
    assert max(got["scores"]) > 0.7

    # estimators of every backend (the C one too) cross process boundaries both ways
    for b in BACKENDS:
        r = got["back"][b]
        assert r["pid"] in got["pids"] and r["worker_pid"] in got["pids"]
        assert r["backend"] == b
        np.testing.assert_array_equal(r["proba_returned"], r["proba_local"])
        np.testing.assert_array_equal(r["proba_sent"], r["proba_local"])
