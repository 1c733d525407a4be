"""Per-layer training diagnostics: where gradients vanish, units die, updates stall.

`fit(..., diagnostics=True)` records, once per epoch (or every N steps with
`diagnostics=N`), for each Dense layer: the gradient norm on a fixed probe batch, the
weight norm, the update-to-weight ratio since the last record (per step), and for
the activation after it the mean, standard deviation and the fraction of dead ReLU
units (no positive input anywhere in the probe batch).
"""

from __future__ import annotations

import numpy as np

from .contract import Layer
from .plan import ACTIVATIONS


class Recorder:
    """Keeps the weights of the previous record, to measure the update between records."""

    def __init__(self, model):
        self.prev = model.bufs.params.copy()
        self.prev_step = 0

    def record(self, model, X: np.ndarray, y: np.ndarray, epoch: int, step: int) -> dict:
        """Figures per Dense layer on the probe batch (X, y), already validated."""
        plan, bufs = model.plan, model.bufs
        rows = X.shape[0]
        bufs.ensure_capacity(rows)
        loss = model.backend.gradients(plan, bufs, X, y, model._peek_seed())
        steps = max(step - self.prev_step, 1)
        layers = []
        for i, L in enumerate(plan.layers):
            if L.kind != Layer.DENSE:
                continue
            W, dW = bufs.params_of(i)["W"], bufs.grads_of(i)["W"]
            W0 = plan.params_of(i, self.prev)["W"]
            w_norm = float(np.linalg.norm(W.astype(np.float64)))
            entry = {
                "layer": i,
                "shape": [L.n_in, L.n_out],
                "grad_norm": float(np.linalg.norm(dW.astype(np.float64))),
                "weight_norm": w_norm,
                "update_ratio": float(np.linalg.norm((W - W0).astype(np.float64)))
                / max(w_norm, 1e-30) / steps,
            }
            act = next((j for j in range(i + 1, len(plan.layers))
                        if plan.layers[j].kind in (Layer.ACTIVATION, Layer.DENSE)), None)
            if act is not None and plan.layers[act].kind == Layer.ACTIVATION:
                A = bufs.out(act, rows).astype(np.float64)
                entry["activation"] = ACTIVATIONS[plan.layers[act].activation]
                entry["act_mean"] = float(A.mean())
                entry["act_std"] = float(A.std())
                if entry["activation"] in ("relu", "leaky_relu"):
                    pre = bufs.out(act - 1, rows)
                    entry["dead_fraction"] = float(np.mean(np.all(pre <= 0, axis=0)))
            layers.append(entry)
        self.prev[...] = bufs.params
        self.prev_step = step
        return {"epoch": epoch, "step": step, "loss": float(loss), "layers": layers}


def table(records: list[dict]) -> str:
    """The last record as a Markdown table, one row per Dense layer."""
    if not records:
        return "(no diagnostics recorded)"
    last = records[-1]
    lines = [f"diagnostics at epoch {last['epoch']}, step {last['step']}:",
             "| layer | shape | grad norm | weight norm | update/weight per step | act mean | "
             "act std | dead ReLU |", "|---|---|---|---|---|---|---|---|"]
    for e in last["layers"]:
        def f(key, fmt="{:.3g}", e=e):
            return fmt.format(e[key]) if key in e else ""
        lines.append(f"| {e['layer']} | {e['shape'][0]}×{e['shape'][1]} | {f('grad_norm')} | "
                     f"{f('weight_norm')} | {f('update_ratio')} | {f('act_mean')} | "
                     f"{f('act_std')} | {f('dead_fraction', '{:.0%}')} |")
    return "\n".join(lines)
