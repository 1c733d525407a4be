"""The l1 and huber losses (issue 13 item 3) on every backend and dtype: the loss kernel
and a model's gradients against torch.nn.L1Loss / HuberLoss(delta), finite differences
away from the kinks, weights, NaN propagation, a bad delta refused, checkpoints."""

from __future__ import annotations

import numpy as np
import pytest

import gradkern as gk
from gradkern.contract import Loss
from gradkern.verify.finite_diff import finite_differences
from gradkern.verify.tolerance import eps_of

torch = pytest.importorskip("torch")
ROBUST = ["l1", "huber"]


def _torch_loss(loss, delta, reduction="mean"):
    if loss == "l1":
        return torch.nn.L1Loss(reduction=reduction)
    return torch.nn.HuberLoss(reduction=reduction, delta=delta)


@pytest.mark.parametrize("loss", ROBUST)
@pytest.mark.parametrize("delta", [1.0, 0.3])
@pytest.mark.parametrize("weighted", [False, True])
def test_kernel_matches_torch(backend, dtype, loss, delta, weighted):
    rng = np.random.default_rng(5)
    pred = (rng.standard_normal((13, 4)) * 2).astype(dtype)
    target = rng.standard_normal((13, 4)).astype(dtype)
    target[0, 0] = pred[0, 0]  # l1's gradient at 0 is 0, as torch's
    w = rng.uniform(0, 2, 13).astype(dtype) if weighted else None
    be = gk.backends.get(backend)
    dpred = np.full_like(pred, np.nan)
    value = be.loss_forward_backward(int(Loss[loss.upper()]), dpred, pred, target, w, delta)
    p = torch.tensor(pred, requires_grad=True)
    per = _torch_loss(loss, delta, "none")(p, torch.from_numpy(target))
    if weighted:
        tw = torch.from_numpy(w)[:, None]
        ref = (per * tw).sum() / (tw.sum() * 4)
    else:
        ref = per.mean()
    ref.backward()
    u = eps_of(dtype)
    S = float(np.abs(pred).max() + np.abs(target).max())
    assert abs(value - ref.item()) <= 16 * u * S
    np.testing.assert_allclose(dpred, p.grad.numpy(), rtol=0, atol=16 * u * S / pred.size * 2)
    assert dpred[0, 0] == 0.0


@pytest.mark.parametrize("loss", ROBUST)
def test_model_gradients_match_torch(backend, dtype, loss):
    from gradkern import torchref
    model = gk.MLP([5, 7, 3], activation="tanh", loss=loss, huber_delta=0.5, dtype=dtype,
                   backend=backend, seed=1)
    rng = np.random.default_rng(2)
    X = rng.standard_normal((16, 5)).astype(dtype)
    y = (rng.standard_normal((16, 3)) * 1.5).astype(dtype)
    value, grads = model.named_gradients(X, y)
    net, loss_fn = torchref.build(model)
    lt = loss_fn(net(torch.from_numpy(X)), torch.from_numpy(y))
    lt.backward()
    u = eps_of(dtype)
    assert abs(value - lt.item()) <= 64 * u * max(1.0, abs(lt.item()))
    for k, g in torchref.named_grads(net).items():
        np.testing.assert_allclose(grads[k], g, rtol=0, atol=64 * u * max(1.0, np.abs(g).max()),
                                   err_msg=k)


@pytest.mark.parametrize("loss", ROBUST)
def test_finite_differences_away_from_the_kinks(backend, loss):
    model = gk.Sequential([gk.Dense(6), gk.Tanh(), gk.Dense(3)], input_size=4, loss=loss,
                          huber_delta=0.7, dtype="float64", backend=backend, seed=0)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((9, 4))
    size = rng.choice([0.2, 1.2], size=(9, 3)) + rng.uniform(0, 0.3, (9, 3))  # |d| not 0, 0.7
    y = model.predict_raw(X) + rng.choice([-1.0, 1.0], size=(9, 3)) * size
    w = finite_differences(model, X, y, n_checks=40, rng=rng)
    assert w.ratio <= 1.0, w


@pytest.mark.parametrize("loss", ROBUST)
def test_nan_propagates_and_the_step_is_rejected(backend, loss):
    model = gk.MLP([3, 4, 2], loss=loss, backend=backend, seed=0)
    be = gk.backends.get(backend)
    dpred = np.zeros((2, 2), np.float32)
    pred = np.array([[np.nan, 1.0], [0.0, 2.0]], np.float32)
    value = be.loss_forward_backward(int(Loss[loss.upper()]), dpred, pred, np.zeros_like(pred))
    assert np.isnan(value) and np.isnan(dpred[0, 0]) and np.isfinite(dpred[1]).all()
    before = model.get_weights()
    model.set_weights([(W * np.float32(1e30), b) for W, b in before])  # overflow -> inf/NaN
    with pytest.raises(gk.TrainingDiverged):
        model.train_step(np.full((4, 3), 1e10), np.zeros((4, 2)), gk.optim.SGD(lr=0.1))


@pytest.mark.parametrize("bad", [0.0, -1.0, float("nan"), float("inf")])
def test_bad_delta_refused(bad):
    with pytest.raises(ValueError, match="delta"):
        gk.MLP([3, 2], loss="huber", huber_delta=bad, backend="numpy")
    with pytest.raises(TypeError, match="huber_delta"):
        gk.MLP([3, 2], loss="huber", huber_delta="1", backend="numpy")
    be = gk.backends.get("numpy")
    z = np.zeros((2, 2))
    with pytest.raises(ValueError, match="delta"):
        be.loss_forward_backward(int(Loss.HUBER), z.copy(), z, z, None, bad)


def test_fit_and_checkpoint_carry_loss_and_delta(backend, tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    y = X @ np.array([1.0, -2.0, 0.5]) + rng.standard_t(1.5, 40)  # heavy tails
    model = gk.MLP([3, 8, 1], loss="huber", huber_delta=0.4, backend=backend, seed=0)
    hist = model.fit(X, y, epochs=3, batch_size=8, progress=False)
    assert np.isfinite(hist["loss"]).all()
    path = tmp_path / "m.safetensors"
    model.save(path)
    back = gk.load(path, backend=backend)
    assert back.loss == "huber" and back.huber_delta == 0.4 and back.plan.delta == 0.4
    np.testing.assert_array_equal(back.predict(X), model.predict(X))
    assert back.evaluate(X, y)["loss"] == model.evaluate(X, y)["loss"]


def test_cli_train_takes_the_robust_losses(tmp_path):
    import subprocess
    import sys
    code = "import sys; from gradkern.cli import main; sys.exit(main(sys.argv[1:]))"
    out = subprocess.run([sys.executable, "-c", code, "train", "--data", "diabetes",
                          "--loss", "huber", "--huber-delta", "0.5", "--hidden", "8",
                          "--epochs", "1", "--backend", "numpy"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "huber" in out.stdout
