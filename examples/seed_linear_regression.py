"""The example of the article gradkern grew from, done right.

Fit y = 2x on x = 1..4 with one Dense unit, from W = b = 0.5, for 100 full-batch epochs.
The article's own code crashes: its targets have shape (N,) against predictions (N, 1),
which NumPy broadcasts into an (N, N) error matrix. gradkern takes (N,) targets against a
single output and reshapes them explicitly. The article's gradient is half the MSE
gradient, so its learning rate 0.01 is 0.005 with gradkern's MSE.
"""

import numpy as np

import gradkern as gk


def main(backend: str = "auto") -> np.ndarray:
    X = np.array([[1.0], [2.0], [3.0], [4.0]])
    y = np.array([2.0, 4.0, 6.0, 8.0])  # shape (N,): one target per row
    model = gk.MLP([1, 1], loss="mse", dtype="float64", backend=backend)
    model.set_weights([(np.array([[0.5]]), np.array([0.5]))])
    model.fit(X, y, epochs=100, batch_size=len(X), optimizer=gk.optim.SGD(lr=0.005),
              shuffle=False, progress=False)
    pred = model.predict(X)
    (W, b), = model.get_weights()
    print(f"W = {W[0, 0]:.4f}, b = {b[0]:.4f}")
    print("predictions:", np.round(pred, 4), "targets:", y)
    return pred


if __name__ == "__main__":
    main()
