"""gradkern.sklearn: scikit-learn's estimator contract, its training semantics, pickling.

Every test runs on every backend. The comparisons with scikit-learn start both from the
same weights (scikit-learn's own initial draw, assigned to ours through `coefs_`) and
train in float64 without shuffling, so they can ask for scikit-learn's numbers exactly.
"""

from __future__ import annotations

import copy
import inspect
import io
import os
import pickle
import subprocess
import sys
import textwrap
import warnings

import numpy as np
import pytest

pytest.importorskip("sklearn")

import joblib  # noqa: E402
from sklearn.exceptions import ConvergenceWarning  # noqa: E402
from sklearn.neural_network import MLPClassifier as SkClassifier  # noqa: E402
from sklearn.neural_network import MLPRegressor as SkRegressor  # noqa: E402
from sklearn.utils.estimator_checks import parametrize_with_checks  # noqa: E402

import gradkern as gk  # noqa: E402
from gradkern.sklearn import EXPECTED_FAILED_CHECKS, MLPClassifier, MLPRegressor  # noqa: E402

BACKENDS = gk.backends.available()


# ------------------------------------------------------------ scikit-learn's own checks
# Small networks and learning_rate_init=0.01 so that max_iter=50 epochs meet the checks'
# score thresholds (check_classifiers_train: accuracy > 0.83, check_regressors_train:
# R^2 > 0.5). The one expected failure, sample-weight equivalence (it cannot hold for
# minibatch SGD), is gradkern.sklearn.EXPECTED_FAILED_CHECKS with its reason.
def _check_instances():
    out = []
    for b in BACKENDS:
        out.append(MLPClassifier((16,), max_iter=50, learning_rate_init=0.01, backend=b))
        out.append(MLPRegressor(hidden_layer_sizes=(16,), max_iter=50,
                                learning_rate_init=0.01, backend=b))
    return out


@pytest.mark.filterwarnings("ignore::sklearn.exceptions.ConvergenceWarning")
@parametrize_with_checks(_check_instances(),
                         expected_failed_checks=lambda est: EXPECTED_FAILED_CHECKS)
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_importable_from_the_package():
    assert gk.MLPClassifier is MLPClassifier and gk.MLPRegressor is MLPRegressor
    assert {"MLPClassifier", "MLPRegressor"} <= set(gk.__all__)


def test_parameters_and_defaults_are_scikit_learns():
    for ours, theirs in ((MLPClassifier(), SkClassifier()), (MLPRegressor(), SkRegressor())):
        mine, sk = ours.get_params(), theirs.get_params()
        shared = set(sk) - {"max_fun"}  # max_fun only bounds lbfgs, which gradkern lacks
        assert shared <= set(mine)
        assert {k: mine[k] for k in shared} == {k: sk[k] for k in shared}
        own = {"backend": "auto", "dtype": "float32", "batchnorm": False, "dropout": 0.0,
               "clip_norm": None}
        if isinstance(ours, MLPClassifier):  # as scikit-learn's linear classifiers have it
            own["class_weight"] = None
        assert {k: mine[k] for k in set(mine) - shared} == own


# ------------------------------------------------------------ the same numbers as sklearn
def _data(task, n=60, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, 5))
    Z = X @ rng.standard_normal((5, 3))
    if task == "multiclass":
        return X, np.array(["a", "b", "c"])[Z.argmax(1)]
    if task == "binary":
        return X, np.where(Z[:, 0] > 0, 7, -2)
    if task == "multilabel":
        return X, (Z > 0).astype(int)
    return X, Z[:, :2] + 0.1 * rng.standard_normal((n, 2))  # two regression outputs


def _pair(task, backend, epochs, **params):
    """scikit-learn's estimator and ours, trained `epochs` more epochs from the same
    weights: scikit-learn's initial draw, assigned to ours, then a warm-start fit."""
    X, y = _data(task)
    ours_cls, sk_cls = ((MLPRegressor, SkRegressor) if task == "regression"
                        else (MLPClassifier, SkClassifier))
    common = dict(hidden_layer_sizes=(7,), solver="sgd", shuffle=False, batch_size=20,
                  random_state=0, tol=0.0, n_iter_no_change=1000, learning_rate_init=0.05)
    common.update(params)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        sk = sk_cls(max_iter=1, **common).fit(X, y)
        W0 = [w.copy() for w in sk.coefs_]
        b0 = [b.copy() for b in sk.intercepts_]
        sk.set_params(warm_start=True, max_iter=epochs).fit(X, y)
        ours = ours_cls(max_iter=1, backend=backend, dtype="float64", **common).fit(X, y)
        ours.coefs_, ours.intercepts_ = W0, b0
        ours.set_params(warm_start=True, max_iter=epochs).fit(X, y)
    return sk, ours, X


TASKS = ["multiclass", "binary", "multilabel", "regression"]


@pytest.mark.parametrize("task", TASKS)
def test_sgd_follows_sklearn_step_for_step(backend, task):
    """Nesterov SGD, no L2: the loss scale of each task (c = 1, 1/K, 2/K) is undone exactly,
    so weights, loss curve and predictions are scikit-learn's to rounding."""
    sk, ours, X = _pair(task, backend, epochs=4, alpha=0.0, momentum=0.9)
    assert ours.n_iter_ == sk.n_iter_ == 4 and ours.t_ == sk.t_ == 5 * 60
    for a, b in zip(ours.coefs_ + ours.intercepts_, sk.coefs_ + sk.intercepts_, strict=True):
        assert a.shape == b.shape
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ours.loss_curve_[1:], sk.loss_curve_[1:], rtol=1e-9)
    assert ours.out_activation_ == sk.out_activation_
    assert (ours.n_layers_, ours.n_outputs_) == (sk.n_layers_, sk.n_outputs_)
    if task == "regression":
        np.testing.assert_allclose(ours.predict(X), sk.predict(X), rtol=1e-9, atol=1e-12)
    else:
        np.testing.assert_array_equal(ours.predict(X), sk.predict(X))
        np.testing.assert_array_equal(ours.classes_, sk.classes_)
        np.testing.assert_allclose(ours.predict_proba(X), sk.predict_proba(X), rtol=1e-8)


@pytest.mark.parametrize("schedule", ["invscaling", "adaptive"])
def test_learning_rate_schedules_follow_sklearn(backend, schedule):
    # momentum 0: torch's momentum buffer and sklearn's velocity differ once the rate changes
    extra = {"tol": 1e9, "n_iter_no_change": 1} if schedule == "adaptive" else {}
    sk, ours, _ = _pair("regression", backend, epochs=40, alpha=0.0, momentum=0.0,
                        learning_rate=schedule, **extra)
    if schedule == "adaptive":  # the rate was cut by 5 until <= 1e-6, then training stopped
        assert 10 < sk.n_iter_ < 40
    assert ours.n_iter_ == sk.n_iter_
    for a, b in zip(ours.coefs_ + ours.intercepts_, sk.coefs_ + sk.intercepts_, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("task", ["multiclass", "multilabel", "regression"])
def test_alpha_is_sklearns_l2(backend, task):
    """alpha maps onto weight_decay = c * alpha / batch_size. One Nesterov step from the same
    weights: the coefficients are scikit-learn's exactly; the intercepts differ by exactly
    the decay gradkern also applies to them, lr * (1 + momentum) * alpha / n * b0; the
    loss curve carries scikit-learn's penalty alpha / (2n) * ||W||^2, taken after the step
    (scikit-learn takes it before)."""
    alpha, lr, m, n = 0.7, 0.05, 0.9, 60
    X, y = _data(task)
    sk, ours, _ = _pair(task, backend, epochs=1, alpha=alpha, batch_size=n,
                        learning_rate_init=lr, momentum=m)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        start = type(sk)(**{**sk.get_params(), "warm_start": False, "max_iter": 1}).fit(X, y)
    W0, b0 = start.coefs_, start.intercepts_
    for a, b in zip(ours.coefs_, sk.coefs_, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-9, atol=1e-12)
    assert any(np.abs(a - b).max() > 1e-3 for a, b in zip(sk.coefs_, W0, strict=True))
    for a, b, b_start in zip(ours.intercepts_, sk.intercepts_, b0, strict=True):
        np.testing.assert_allclose(a, b - lr * (1 + m) * alpha / n * b_start, rtol=1e-9,
                                   atol=1e-12)
    sq = lambda Ws: sum(float((W**2).sum()) for W in Ws)  # noqa: E731
    np.testing.assert_allclose(
        ours.loss_curve_[1], sk.loss_curve_[1] - alpha / (2 * n) * (sq(W0) - sq(ours.coefs_)),
        rtol=1e-9)


def test_adam_follows_sklearn(backend):
    """Adam: only the place of epsilon differs (torch's: scikit-learn's effective epsilon is
    eps * sqrt(1 - beta_2^t)), a relative difference of ~eps / |gradient|."""
    sk, ours, _ = _pair("multiclass", backend, epochs=5, solver="adam", alpha=0.0,
                        learning_rate_init=0.01)
    for a, b in zip(ours.coefs_ + ours.intercepts_, sk.coefs_ + sk.intercepts_, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-7)


# ------------------------------------------------------------------- convergence
def test_stops_like_sklearn_when_the_loss_stalls(backend):
    X, y = _data("multiclass")
    kw = dict(hidden_layer_sizes=(7,), tol=1e9, n_iter_no_change=3, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # it converged: no warning
        ours = MLPClassifier(backend=backend, **kw).fit(X, y)
        sk = SkClassifier(**kw).fit(X, y)
    assert ours.n_iter_ == sk.n_iter_ == 5  # count > n_iter_no_change after 1 + 4 epochs
    assert len(ours.loss_curve_) == 5 and ours.best_loss_ == min(ours.loss_curve_)
    assert ours.validation_scores_ is None and ours.best_validation_score_ is None
    with pytest.warns(ConvergenceWarning, match="Maximum iterations \\(3\\)"):
        MLPClassifier((7,), max_iter=3, backend=backend).fit(X, y)


def test_early_stopping_on_a_held_out_fraction(backend):
    X, y = _data("multiclass", n=200)
    kw = dict(hidden_layer_sizes=(8,), early_stopping=True, validation_fraction=0.2,
              n_iter_no_change=4, tol=1e-4, max_iter=300, learning_rate_init=0.05,
              random_state=3, backend=backend)
    est = MLPClassifier(**kw).fit(X, y)
    assert est.best_loss_ is None
    scores = est.validation_scores_
    assert len(scores) == est.n_iter_ == len(est.loss_curve_) < 300
    assert est.best_validation_score_ == max(scores)
    assert all(s in np.arange(41) / 40 for s in scores)  # accuracies on 40 held-out rows
    best, count, counts = -np.inf, 0, []  # scikit-learn's rule, replayed on the scores
    for s in scores:
        count = count + 1 if s < best + 1e-4 else 0
        best = max(best, s)
        counts.append(count)
    assert counts[-1] == 5 and max(counts[:-1]) <= 4  # stopped at the first 4 + 1 misses
    again = MLPClassifier(**kw).fit(X, y)  # seeded: the same split, the same run
    np.testing.assert_array_equal(again.validation_scores_, scores)
    np.testing.assert_array_equal(again.predict_proba(X), est.predict_proba(X))
    with pytest.raises(ValueError, match="partial_fit does not support early_stopping"):
        MLPClassifier(early_stopping=True).partial_fit(X, y, classes=np.unique(y))


# ------------------------------------------------------------------ targets, labels
def test_label_types_and_output_layouts(backend):
    X, y = _data("multiclass")
    clf = MLPClassifier((8,), max_iter=5, backend=backend, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        clf.fit(X, y)
        assert list(clf.classes_) == ["a", "b", "c"] and set(clf.predict(X)) <= set("abc")
        P = clf.predict_proba(X)
        assert P.shape == (60, 3) and P.dtype == np.float64
        np.testing.assert_allclose(P.sum(1), 1.0, rtol=1e-12)
        np.testing.assert_array_equal(clf.predict(X), clf.classes_[P.argmax(1)])
        np.testing.assert_allclose(clf.predict_log_proba(X), np.log(P))
        assert clf.out_activation_ == "softmax" and clf.coefs_[1].shape == (8, 3)

        Xb, yb = _data("binary")  # one logistic output, as scikit-learn
        b = MLPClassifier((8,), max_iter=5, backend=backend).fit(Xb, yb)
        assert list(b.classes_) == [-2, 7] and b.n_outputs_ == 1
        assert b.coefs_[-1].shape == (8, 1) and b.out_activation_ == "logistic"
        assert b.predict_proba(Xb).shape == (60, 2)
        assert set(b.predict(Xb)) <= {-2, 7}

        Xm, Ym = _data("multilabel")
        m = MLPClassifier((8,), max_iter=5, backend=backend).fit(Xm, Ym)
        assert m.n_outputs_ == 3 and list(m.classes_) == [0, 1, 2]
        Pm = m.predict_proba(Xm)
        assert Pm.shape == (60, 3)
        np.testing.assert_array_equal(m.predict(Xm), (Pm > 0.5).astype(int))

        Xr, Yr = _data("regression")
        r = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, backend=backend).fit(Xr, Yr)
        assert r.predict(Xr).shape == (60, 2) and r.out_activation_ == "identity"
        r1 = MLPRegressor(hidden_layer_sizes=(8,), max_iter=5, backend=backend)
        assert r1.fit(Xr, Yr[:, 0]).predict(Xr).shape == (60,)
    with pytest.raises(ValueError, match="one class"):
        MLPClassifier(max_iter=2, backend=backend).fit(X, np.zeros(60))
    with pytest.raises(ValueError, match="Unknown label type"):
        MLPClassifier(max_iter=2, backend=backend).fit(X, Xr[:, 0])


def test_partial_fit_is_fit_one_epoch_at_a_time(backend):
    X, y = _data("multiclass")
    kw = dict(hidden_layer_sizes=(8,), random_state=5, backend=backend, batch_size=16)
    with pytest.raises(ValueError, match="classes must be passed"):
        MLPClassifier(**kw).partial_fit(X, y)
    inc = MLPClassifier(**kw)
    for _ in range(3):
        inc.partial_fit(X, y, classes=np.array(["a", "b", "c", "d"]))
    assert inc.n_iter_ == 1 and inc.t_ == 180 and len(inc.loss_curve_) == 3
    assert inc.predict_proba(X).shape == (60, 4)  # 'd' never seen, still a class
    with pytest.raises(ValueError, match="not the same as on last call"):
        inc.partial_fit(X, y, classes=np.array(["a", "b"]))
    with pytest.raises(ValueError, match="classes not in"):
        inc.partial_fit(X, np.where(y == "a", "z", y))
    full = MLPClassifier(max_iter=3, **kw)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        full.fit(X, y)
    once = MLPClassifier(**kw).partial_fit(X, y, classes=np.unique(y))
    once.partial_fit(X, y).partial_fit(X, y)
    np.testing.assert_array_equal(once.predict_proba(X), full.predict_proba(X))
    assert once.loss_curve_ == full.loss_curve_
    reg = MLPRegressor(hidden_layer_sizes=(4,), backend=backend)
    Xr, Yr = _data("regression")
    reg.partial_fit(Xr, Yr).partial_fit(Xr, Yr)
    assert reg.t_ == 120 and reg.n_outputs_ == 2


def test_partial_fit_takes_sample_weight_as_fit_does(backend):
    """partial_fit(X, y, sample_weight=None[, classes]) in scikit-learn's order: epochs of
    weighted partial_fit are the weighted fit's epochs, bit for bit; weights matter."""
    for ours, theirs in ((MLPClassifier, SkClassifier), (MLPRegressor, SkRegressor)):
        assert (list(inspect.signature(ours.partial_fit).parameters)
                == list(inspect.signature(theirs.partial_fit).parameters))
    X, y = _data("multiclass")
    sw = np.random.default_rng(1).uniform(0.0, 3.0, 60)
    sw[:10] = 0.0
    kw = dict(hidden_layer_sizes=(8,), random_state=5, backend=backend, batch_size=16)
    inc = MLPClassifier(**kw).partial_fit(X, y, sample_weight=sw, classes=np.unique(y))
    inc.partial_fit(X, y, sw)  # positional, as scikit-learn's
    plain = MLPClassifier(**kw).partial_fit(X, y, classes=np.unique(y)).partial_fit(X, y)
    Xr, Yr = _data("regression")
    rkw = dict(hidden_layer_sizes=(4,), random_state=2, backend=backend, batch_size=16)
    rinc = MLPRegressor(**rkw).partial_fit(Xr, Yr, sw).partial_fit(Xr, Yr, sample_weight=sw)
    rplain = MLPRegressor(**rkw).partial_fit(Xr, Yr).partial_fit(Xr, Yr)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        full = MLPClassifier(max_iter=2, **kw).fit(X, y, sample_weight=sw)
        rfull = MLPRegressor(max_iter=2, **rkw).fit(Xr, Yr, sample_weight=sw)
    for a, b, c in ((inc, full, plain), (rinc, rfull, rplain)):
        assert a.loss_curve_ == b.loss_curve_ and a.t_ == b.t_ == 120
        for wa, wb in zip(a.coefs_ + a.intercepts_, b.coefs_ + b.intercepts_, strict=True):
            np.testing.assert_array_equal(wa, wb)
        assert not all(np.array_equal(wa, wc)
                       for wa, wc in zip(a.coefs_, c.coefs_, strict=True))
        assert a.loss_curve_ != c.loss_curve_


@pytest.mark.parametrize("bad", [
    lambda n: -np.ones(n), lambda n: np.ones(n + 1), lambda n: np.full(n, np.nan),
    lambda n: np.r_[np.inf, np.ones(n - 1)], lambda n: np.ones((n, 2)),
], ids=["negative", "length", "nan", "inf", "2d"])
def test_partial_fit_refuses_bad_weights_and_changes_nothing(backend, bad):
    X, y = _data("multiclass")
    est = MLPClassifier((8,), backend=backend, random_state=0).partial_fit(
        X, y, classes=np.unique(y))
    state, proba = pickle.dumps(est), est.predict_proba(X)
    with pytest.raises(ValueError, match="sample_weight|Negative|NaN|infinity|1D"):
        est.partial_fit(X, y, sample_weight=bad(60))
    assert pickle.dumps(est) == state
    np.testing.assert_array_equal(est.predict_proba(X), proba)
    fresh = MLPRegressor(hidden_layer_sizes=(4,), backend=backend)
    Xr, Yr = _data("regression")
    with pytest.raises(ValueError, match="sample_weight|Negative|NaN|infinity|1D"):
        fresh.partial_fit(Xr, Yr, sample_weight=bad(60))
    assert not hasattr(fresh, "n_features_in_") and not hasattr(fresh, "t_")


def test_partial_fit_refuses_balanced_class_weight():
    X, y = _data("multiclass")
    est = MLPClassifier((4,), class_weight="balanced", backend=BACKENDS[0])
    with pytest.raises(ValueError, match="'balanced' is not supported for partial_fit"):
        est.partial_fit(X, y, classes=np.unique(y))
    assert not hasattr(est, "classes_")
    est.set_params(class_weight={"a": 2.0}).partial_fit(X, y, classes=np.unique(y))
    assert est.t_ == 60


def test_warm_start_continues_and_checks_compatibility(backend):
    X, y = _data("multiclass")
    est = MLPClassifier((8,), max_iter=3, warm_start=True, backend=backend, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
        first = est.coefs_[0].copy()
        est.fit(X, y)
    assert len(est.loss_curve_) == 6 and est.n_iter_ == 3 and est.t_ == 360
    assert not np.array_equal(first, est.coefs_[0])
    before = est.predict_proba(X)
    with pytest.raises(ValueError, match="same classes"):
        est.fit(X, np.where(y == "c", "b", y))
    with pytest.raises(ValueError, match="warm_start continues the fitted network"):
        est.set_params(hidden_layer_sizes=(9,)).fit(X, y)
    np.testing.assert_array_equal(est.predict_proba(X), before)
    assert len(est.loss_curve_) == 6


# ------------------------------------------------------------- bad input, divergence
def test_bad_parameters_raise_clear_errors():
    X, y = _data("multiclass")
    for params, err, match in [
        ({"solver": "lbfgs"}, ValueError, "lbfgs.*not supported"),
        ({"learning_rate": "optimal"}, ValueError, "learning_rate must be one of"),
        ({"activation": "softplus"}, ValueError, "activation must be one of"),
        ({"hidden_layer_sizes": (4, 0)}, ValueError, "hidden_layer_sizes must be > 0"),
        ({"alpha": -1.0}, ValueError, "alpha"),
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"max_iter": 2.5}, TypeError, "max_iter"),
        ({"dtype": "float16"}, TypeError, "dtype"),
        ({"backend": "cuda"}, ValueError, "unknown backend"),
        ({"dropout": 1.0}, ValueError, "dropout"),
        ({"clip_norm": 0}, ValueError, "clip_norm"),
    ]:
        est = MLPClassifier(**params)
        with pytest.raises(err, match=match):
            est.fit(X, y)
        assert not hasattr(est, "n_features_in_") and not hasattr(est, "classes_")
    with pytest.raises(ValueError, match="Poisson"):
        MLPRegressor(loss="poisson").fit(*_data("regression"))


def test_a_failed_fit_leaves_the_estimator_as_it_was(backend):
    X, y = _data("multiclass")
    est = MLPClassifier((8,), max_iter=4, backend=backend, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    state = pickle.dumps(est)
    proba = est.predict_proba(X)
    Xnan = X.copy()
    Xnan[3, 1] = np.nan
    for call in (lambda: est.fit(Xnan, y), lambda: est.partial_fit(X[:, :4], y),
                 lambda: est.partial_fit(X, np.where(y == "a", "q", y)),
                 lambda: est.set_params(solver="lbfgs").fit(X, y)):
        with pytest.raises(ValueError):
            call()
        est.set_params(solver="adam")
        assert pickle.dumps(est) == state
        np.testing.assert_array_equal(est.predict_proba(X), proba)
    # a diverging step, after some epochs of a warm-start fit: all of them are undone
    Xr, Yr = _data("regression")
    reg = MLPRegressor(hidden_layer_sizes=(8,), solver="sgd", max_iter=2, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        reg.fit(Xr, Yr)
    state, pred = pickle.dumps(reg), reg.predict(Xr)
    reg.set_params(warm_start=True, learning_rate_init=1e3, max_iter=50)
    with pytest.raises(ValueError, match="diverged"):
        reg.fit(Xr, 1e3 * Yr)
    reg.set_params(warm_start=False, learning_rate_init=1e-3, max_iter=2)
    assert pickle.dumps(reg) == state
    np.testing.assert_array_equal(reg.predict(Xr), pred)
    fresh = MLPRegressor(hidden_layer_sizes=(8,), solver="sgd", learning_rate_init=1e3,
                         backend=backend)
    with pytest.raises(ValueError, match="diverged"):
        fresh.fit(Xr, 1e3 * Yr)
    assert not hasattr(fresh, "n_iter_") and not hasattr(fresh, "n_features_in_")


def test_verbose_prints_the_loss(backend, capsys):
    X, y = _data("regression")
    est = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, verbose=True, backend=backend)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    out = capsys.readouterr().out
    assert f"Iteration 2, loss = {est.loss_curve_[1]:.8f}" in out


def test_feature_names_from_pandas(backend):
    pd = pytest.importorskip("pandas")
    X, y = _data("regression")
    df = pd.DataFrame(X, columns=[f"f{i}" for i in range(5)])
    est = MLPRegressor(hidden_layer_sizes=(4,), max_iter=2, backend=backend).fit(df, y)
    assert list(est.feature_names_in_) == list(df.columns) and est.n_features_in_ == 5


# ------------------------------------------------------------------------- pickling
@pytest.mark.parametrize("make", ["classifier", "regressor"])
def test_pickle_deepcopy_joblib_round_trip(backend, make, tmp_path):
    if make == "classifier":
        X, y = _data("multiclass")
        est = MLPClassifier((8,), batchnorm=True, dropout=0.1, max_iter=3, backend=backend,
                            random_state=0)
    else:
        X, y = _data("regression")
        est = MLPRegressor(hidden_layer_sizes=(8,), solver="sgd", max_iter=3,
                           backend=backend, random_state=0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(X, y)
    blob = pickle.dumps(est)
    assert b"gradkern.backends" not in blob  # backend state is rebuilt, never pickled
    joblib.dump(est, tmp_path / "est.joblib")
    buf = io.BytesIO()
    joblib.dump(est, buf)
    copies = [pickle.loads(blob), copy.deepcopy(est), joblib.load(tmp_path / "est.joblib")]
    ref = est.predict(X)
    for other in copies:
        assert other._model.backend_name == backend
        np.testing.assert_array_equal(other.predict(X), ref)
        assert other.loss_curve_ == est.loss_curve_
    # the optimizer state and the data order travel too: training on continues identically
    est.partial_fit(X, y)
    for other in copies:
        other.partial_fit(X, y)
        np.testing.assert_array_equal(other.predict(X), est.predict(X))
    unfitted = pickle.loads(pickle.dumps(MLPClassifier(backend=backend)))
    assert unfitted.get_params() == MLPClassifier(backend=backend).get_params()


@pytest.mark.skipif("c" not in BACKENDS, reason="the C backend does not load here")
def test_grid_search_on_the_c_backend_with_two_workers():
    """GridSearchCV with n_jobs=2 (loky worker processes that import gradkern and train on
    the C backend), in a subprocess so that a hang fails the test."""
    code = textwrap.dedent("""
        import warnings
        from sklearn.datasets import load_digits
        from sklearn.model_selection import GridSearchCV
        import gradkern as gk
        warnings.simplefilter("ignore")
        X, y = load_digits(return_X_y=True)
        gs = GridSearchCV(gk.MLPClassifier(backend="c", max_iter=100, random_state=0),
                          {"hidden_layer_sizes": [(32,), (64,)]}, n_jobs=2, cv=3).fit(X, y)
        print(gs.best_score_, gs.best_estimator_._model.backend_name)
        print(len(gs.cv_results_["mean_test_score"]))
    """)
    env = dict(os.environ)
    env.setdefault("NUMBA_CACHE_DIR", "/tmp/nbcache-test-sklearn")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    first, second = done.stdout.split("\n")[:2]
    score, name = first.split()
    assert float(score) > 0.9 and name == "c" and second == "2", done.stdout
