"""Fit time of gradkern's MLPClassifier against scikit-learn's, side by side in one run.

Both estimators get the same parameters (hidden sizes, Adam, batch size, alpha, learning
rate, max_iter) with tol=0 and n_iter_no_change=max_iter, so both run exactly max_iter
epochs; each fit is timed `--repeats` times, alternating the two, and the median is
reported with the held-out accuracy (a stratified 20 % split). Data: scikit-learn's digits
and a synthetic `make_classification` set of `--rows` rows, both standardized on the
training split. Prints a Markdown table to stdout.

    python benchmarks/sklearn_fit_time.py                        # digits and 100,000 rows
    python benchmarks/sklearn_fit_time.py --rows 20000 --max-iter 2 --repeats 1  # quick
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings

from sklearn.datasets import load_digits, make_classification
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import train_test_split
from sklearn.neural_network import MLPClassifier as SkMLP
from sklearn.preprocessing import StandardScaler

import gradkern as gk
from gradkern._markdown import table


def datasets(rows: int, seed: int):
    X, y = load_digits(return_X_y=True)
    yield "digits", X, y
    X, y = make_classification(n_samples=rows, n_features=40, n_informative=20,
                               n_redundant=10, n_classes=5, n_clusters_per_class=2,
                               random_state=seed)
    yield f"make_classification ({rows:,} rows)", X, y


SETTLE_S = 0.3


def timed_fit(make, X, y) -> tuple[float, object]:
    est = make()
    # OpenBLAS's and OpenMP's threads busy-wait for a while after their last call; on a
    # 2-core machine they would take the cores from the fit timed next (as in gradkern bench)
    time.sleep(SETTLE_S)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)  # every epoch is meant to run
        t0 = time.perf_counter()
        est.fit(X, y)
        return time.perf_counter() - t0, est


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=100_000, help="rows of the synthetic set")
    ap.add_argument("--hidden", default="100", help="hidden sizes, comma-separated")
    ap.add_argument("--max-iter", type=int, default=20, help="epochs of every fit")
    ap.add_argument("--batch-size", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--backend", default="auto")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    params = dict(hidden_layer_sizes=hidden, solver="adam", alpha=1e-4,
                  batch_size=args.batch_size, learning_rate_init=1e-3, max_iter=args.max_iter,
                  tol=0.0, n_iter_no_change=args.max_iter, random_state=args.seed)
    backend = gk.backends.get(args.backend).name
    import sklearn

    rows = []
    for name, X, y in datasets(args.rows, args.seed):
        Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.2, stratify=y,
                                              random_state=args.seed)
        sc = StandardScaler().fit(Xtr)
        Xtr, Xte = sc.transform(Xtr), sc.transform(Xte)
        ours_t, theirs_t = [], []
        # warm-up (Numba's compilation, the C library's loading): not timed
        timed_fit(lambda: gk.MLPClassifier(**{**params, "max_iter": 1}, backend=backend),
                  Xtr[:256], ytr[:256])
        for _ in range(args.repeats):  # alternating, so drifts of the machine hit both
            t, ours = timed_fit(lambda: gk.MLPClassifier(**params, backend=backend), Xtr, ytr)
            ours_t.append(t)
            t, theirs = timed_fit(lambda: SkMLP(**params), Xtr, ytr)
            theirs_t.append(t)
        a, b = statistics.median(ours_t), statistics.median(theirs_t)
        rows.append([name, f"{Xtr.shape[0]:,} × {Xtr.shape[1]}", str(ours.n_iter_),
                     f"{a:.3f}", f"{b:.3f}", f"{b / a:.1f}×",
                     f"{ours.score(Xte, yte):.4f}", f"{theirs.score(Xte, yte):.4f}"])
    print(f"MLPClassifier{hidden}, adam, batch {args.batch_size}, alpha 1e-4, lr 1e-3, "
          f"{args.max_iter} epochs, median of {args.repeats} fits (alternating); gradkern "
          f"backend {backend}, float32, {gk.get_threads()} threads; scikit-learn "
          f"{sklearn.__version__} (float64); {platform.processor() or platform.machine()}\n")
    print(table(["data", "train rows × features", "epochs", "gradkern fit s",
                 "scikit-learn fit s", "speedup", "gradkern test acc", "scikit-learn test acc"],
                rows))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
