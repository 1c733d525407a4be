"""`gradkern vanishing`: watch gradients vanish in deep nets, and the remedies work.

    gradkern vanishing --quick --out DIR    # depths 2, 8, 16, 3 epochs: a few seconds
    gradkern vanishing --out DIR            # depths 2..32, 20 epochs: about 2-3 minutes

For every depth (hidden layers of WIDTH units) × activation (sigmoid, tanh, relu) ×
batch normalization (off, on) × initialization (naive N(0, 0.01²), or the recommended
one: He for relu, Xavier for sigmoid and tanh), it measures

- the gradient norm of every Dense layer's weights at initialization, in float64, on a
  fixed batch of PROBE_ROWS digits (training mode: batch statistics for BatchNorm),
  and the ratio first layer / last (output) layer;
- the training loss and the test loss and accuracy after the same short training on
  digits (SGD with momentum, float64) for every network.

It writes report.md (the tables), report.json (every figure) and PNG plots to --out.
See docs/vanishing-gradients.md for what the figures mean.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

import numpy as np

from . import backends as _backends
from . import datasets as _datasets
from . import optim as _optim
from ._args import int_list
from ._markdown import table
from .model import MLP, TrainingDiverged, default_init
from .threads import get_threads, set_threads

SCHEMA = "gradkern-vanishing/1"
DEPTHS = (2, 4, 8, 16, 32)
QUICK_DEPTHS = (2, 8, 16)
ACTIVATIONS = ("sigmoid", "tanh", "relu")
INITS = ("naive", "recommended")
WIDTH = 64          # units per hidden layer
PROBE_ROWS = 256    # rows of the fixed batch the gradients at initialization are taken on
EPOCHS = 20
QUICK_EPOCHS = 3
BATCH_SIZE = 64
LR = 0.01           # SGD: an update proportional to the gradient shows its size honestly
MOMENTUM = 0.9
DTYPE = "float64"   # sigmoid's gradients at depth 32 reach 1e-54: below float32's range
CHANCE_LOSS = math.log(10)  # cross-entropy of a uniform guess over the 10 digits

__all__ = ["main", "build_model", "gradient_norms", "run", "write_report"]


# ------------------------------------------------------------------ the experiment

def build_model(depth: int, activation: str, batchnorm: bool, init: str, width: int = WIDTH,
                backend: str = "auto", seed: int = 0, dtype: str = DTYPE):
    """The digits classifier: 64 inputs, `depth` hidden layers of `width`, 10 outputs.
    init is 'naive' or 'recommended' (gradkern's default for the activation)."""
    if init not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {init!r}")
    return MLP([64] + [width] * depth + [10], activation=activation,
                  loss="cross_entropy", dtype=dtype, backend=backend, seed=seed,
                  init="naive" if init == "naive" else None, batchnorm=batchnorm)


def gradient_norms(model, X: np.ndarray, y: np.ndarray) -> tuple[float, list[float]]:
    """Loss and the Frobenius norm of each Dense layer's weight gradient, input to output."""
    loss, grads = model.named_gradients(X, y)
    # Dense weights are the 2-D gradients (in, out); BatchNorm's gamma and beta are 1-D
    norms = [float(np.linalg.norm(g.astype(np.float64))) for name, g in grads.items()
             if name.endswith(".weight") and g.ndim == 2]
    return float(loss), norms


def _ratio(norms: list[float]) -> float:
    if norms[-1] == 0:
        return math.nan
    return norms[0] / norms[-1]


def run_one(data, depth: int, activation: str, batchnorm: bool, init: str, epochs: int,
            width: int = WIDTH, backend: str = "auto", seed: int = 0) -> dict:
    """Gradient norms at initialization, then the short training; one network."""
    model = build_model(depth, activation, batchnorm, init, width, backend, seed)
    X, y = data.X_train[:PROBE_ROWS], data.y_train[:PROBE_ROWS]
    loss0, norms = gradient_norms(model, X, y)
    entry = {
        "depth": depth, "activation": activation, "batchnorm": batchnorm, "init": init,
        "init_scheme": "naive" if init == "naive" else default_init(activation),
        "grad_norms": norms, "ratio": _ratio(norms), "loss_at_init": loss0,
        "train_loss": math.nan, "test_loss": math.nan, "test_accuracy": math.nan,
        "diverged": None,
    }
    t0 = time.perf_counter()
    try:
        hist = model.fit(data.X_train, data.y_train, epochs=epochs, batch_size=BATCH_SIZE,
                         optimizer=_optim.SGD(lr=LR, momentum=MOMENTUM), progress=False)
        entry["train_loss"] = hist["loss"][-1]
        ev = model.evaluate(data.X_test, data.y_test)
        entry["test_loss"], entry["test_accuracy"] = ev["loss"], ev["accuracy"]
    except TrainingDiverged as exc:
        entry["diverged"] = str(exc)
    entry["train_seconds"] = time.perf_counter() - t0
    return entry


def settings(activations=ACTIVATIONS) -> list[tuple[str, bool, str]]:
    """(activation, batchnorm, init) in report order."""
    return [(a, bn, init) for a in activations for bn in (False, True) for init in INITS]


def run(depths=DEPTHS, epochs: int = EPOCHS, backend: str = "auto", seed: int = 0,
        width: int = WIDTH, activations=ACTIVATIONS, progress: bool = True) -> dict:
    """Every network of the grid; returns the results as written to report.json."""
    from . import __version__

    data = _datasets.load("digits", seed=seed)
    backend_name = _backends.get(backend).name
    grid = [(s, d) for s in settings(activations) for d in depths]
    bar = None
    if progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(grid), desc="vanishing", unit="net", leave=False)
    t0 = time.perf_counter()
    runs = []
    try:
        for (act, bn, init), depth in grid:
            runs.append(run_one(data, depth, act, bn, init, epochs, width, backend_name, seed))
            if bar is not None:
                bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return {
        "schema": SCHEMA,
        "config": {
            "depths": list(depths), "activations": list(activations), "inits": list(INITS),
            "width": width, "epochs": epochs, "batch_size": BATCH_SIZE,
            "optimizer": f"SGD(lr={LR}, momentum={MOMENTUM})", "dtype": DTYPE,
            "backend": backend_name, "seed": seed, "probe_rows": PROBE_ROWS,
            "train_rows": int(data.X_train.shape[0]), "test_rows": int(data.X_test.shape[0]),
            "gradkern": __version__,
        },
        "seconds": time.perf_counter() - t0,
        "runs": runs,
    }


# ------------------------------------------------------------------ tables

def fmt_ratio(x: float) -> str:
    """A ratio or norm in 2-significant-digit exponent form, as the table shows it."""
    if x is None or not math.isfinite(x):
        return "—"
    return f"{x:.1e}"


def _setting_label(act: str, bn: bool, init: str, results: dict) -> list[str]:
    run0 = next(r for r in results["runs"] if (r["activation"], r["batchnorm"], r["init"])
                == (act, bn, init))
    name = init if init == "naive" else f"{init} ({run0['init_scheme'].replace('_normal', '')})"
    return [act, name, "on" if bn else "off"]


def _grid_table(results: dict, cell) -> str:
    depths = results["config"]["depths"]
    by_key = {(r["activation"], r["batchnorm"], r["init"], r["depth"]): r
              for r in results["runs"]}
    rows = [_setting_label(act, bn, init, results)
            + [cell(by_key[(act, bn, init, d)]) for d in depths]
            for act, bn, init in settings(results["config"]["activations"])]
    return table(["activation", "init", "batchnorm"] + [f"depth {d}" for d in depths], rows,
                 align=False)


def ratio_table(results: dict) -> str:
    """First-layer / last-layer weight-gradient norm at initialization."""
    return _grid_table(results, lambda r: fmt_ratio(r["ratio"]))


def first_layer_table(results: dict) -> str:
    """First-layer weight-gradient norm at initialization (absolute)."""
    return _grid_table(results, lambda r: fmt_ratio(r["grad_norms"][0]))


def training_table(results: dict) -> str:
    """Training loss (last epoch) / test accuracy after the short training."""
    def cell(r):
        if r["diverged"]:
            return "diverged"
        return f"{r['train_loss']:.3f} / {100 * r['test_accuracy']:.0f}%"
    return _grid_table(results, cell)


# ------------------------------------------------------------------ report

def write_report(results: dict, out) -> list[str]:
    """report.json, the PNG plots and report.md into `out`; returns the file names."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    tmp = out / "report.json.tmp"
    tmp.write_text(json.dumps(results, indent=1, allow_nan=True))
    tmp.replace(out / "report.json")
    plots, note = write_plots(results, out)
    (out / "report.md").write_text(markdown(results, plots, note))
    return ["report.md", "report.json", *plots]


def markdown(results: dict, plots: list[str], note: str | None) -> str:
    cfg = results["config"]
    lines = [
        "# Vanishing gradients: gradkern vanishing",
        "",
        f"Digits ({cfg['train_rows']} training rows, {cfg['test_rows']} test rows), networks "
        f"64 → {cfg['width']} × depth → 10, cross-entropy, {cfg['dtype']}, backend "
        f"`{cfg['backend']}`, seed {cfg['seed']}. Depth counts hidden layers. "
        f"Run time {results['seconds']:.0f} s.",
        "",
        "## Gradient norm ratio at initialization: first layer / last layer",
        "",
        f"‖∂L/∂W‖ of the first Dense layer divided by that of the last (output) layer, at "
        f"initialization, on a fixed batch of the first {cfg['probe_rows']} training rows. "
        "1 means the first layer gets as much gradient as the last; 1e-10 means it gets "
        "ten orders of magnitude less. Naive is N(0, 0.01²); the recommended init is He "
        "for relu and Xavier for sigmoid and tanh.",
        "",
        ratio_table(results),
        "",
        "## First-layer gradient norm at initialization",
        "",
        "The ratio alone can hide a net that is dead throughout: with naive init, tanh and "
        "relu shrink the forward signal as fast as the backward one, so every layer gets an "
        "equally tiny gradient and the ratio stays near 1.",
        "",
        first_layer_table(results),
        "",
        "## After training",
        "",
        f"Training loss of the last epoch / test accuracy after {cfg['epochs']} epochs of "
        f"{cfg['optimizer']}, batch {cfg['batch_size']}, the same for every network. "
        f"Chance is a loss of ln 10 = {CHANCE_LOSS:.3f} and 10% accuracy.",
        "",
        training_table(results),
        "",
    ]
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{p}]({p})" for p in plots]
        lines.append("")
    if note:
        lines += [f"*{note}*", ""]
    lines += ["Reproduce: `gradkern vanishing --out DIR"
              + (f" --backend {cfg['backend']}" if cfg["backend"] else "")
              + f" --seed {cfg['seed']} --epochs {cfg['epochs']} --depths "
              + ",".join(str(d) for d in cfg["depths"]) + "`", ""]
    return "\n".join(lines)


SETTING_STYLE = {  # (batchnorm, init) -> line style
    (False, "naive"): {"linestyle": ":", "marker": "v"},
    (False, "recommended"): {"linestyle": "-", "marker": "o"},
    (True, "naive"): {"linestyle": "--", "marker": "^"},
    (True, "recommended"): {"linestyle": "-.", "marker": "s"},
}


def _setting_name(bn: bool, init: str) -> str:
    return f"{init} init" + (" + batchnorm" if bn else "")


def write_plots(results: dict, out: Path) -> tuple[list[str], str | None]:
    """PNG plots into `out`; (file names, note when matplotlib is missing)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        return [], f"matplotlib is not installed ({exc}): this report has no plots."
    cfg = results["config"]
    acts, depths = cfg["activations"], cfg["depths"]
    by_key = {(r["activation"], r["batchnorm"], r["init"], r["depth"]): r
              for r in results["runs"]}
    cmap = plt.get_cmap("viridis")
    colors = {d: cmap(k / max(len(depths) - 1, 1) * 0.9) for k, d in enumerate(depths)}
    files = []

    # 1. gradient norm against layer index: one column per activation, one row per setting
    combos = [(bn, init) for bn in (False, True) for init in INITS]
    fig, axes = plt.subplots(len(combos), len(acts), squeeze=False, sharey=True,
                             figsize=(3.6 * len(acts), 2.5 * len(combos)))
    for r, (bn, init) in enumerate(combos):
        for c, act in enumerate(acts):
            ax = axes[r][c]
            for d in depths:
                norms = np.asarray(by_key[(act, bn, init, d)]["grad_norms"])
                layers = np.arange(1, norms.size + 1)
                ax.plot(layers, np.where(norms > 0, norms, np.nan), color=colors[d],
                        marker=".", markersize=3, linewidth=1.2, label=f"depth {d}")
            ax.set_yscale("log")
            ax.grid(True, which="major", alpha=0.3)
            ax.set_title(f"{act}, {_setting_name(bn, init)}", fontsize=9)
            if r == len(combos) - 1:
                ax.set_xlabel("Dense layer (1 = first, input side)", fontsize=8)
            if c == 0:
                ax.set_ylabel("‖∂L/∂W‖ at init", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7, loc="lower right")
    fig.suptitle("Weight-gradient norm per layer at initialization (digits, "
                 f"{cfg['probe_rows']} rows, width {cfg['width']})", fontsize=11)
    fig.tight_layout()
    fig.savefig(out / "grad_norms.png", dpi=100)
    plt.close(fig)
    files.append("grad_norms.png")

    # 2. ratio first / last against depth, and 3. final training loss against depth
    for name, key, ylabel, title in (
        ("ratio.png", "ratio", "‖∂L/∂W₁‖ / ‖∂L/∂W_last‖",
         "First-layer / last-layer gradient norm at initialization"),
        ("final_loss.png", "train_loss", "training loss, last epoch",
         f"Loss after {cfg['epochs']} epochs of {cfg['optimizer']}"),
    ):
        fig, axes = plt.subplots(1, len(acts), squeeze=False, sharey=True,
                                 figsize=(3.6 * len(acts), 3.2))
        for c, act in enumerate(acts):
            ax = axes[0][c]
            for bn, init in combos:
                ys = [by_key[(act, bn, init, d)][key] for d in depths]
                ys = [y if y is not None and math.isfinite(y) and y > 0 else np.nan for y in ys]
                ax.plot(depths, ys, label=_setting_name(bn, init), **SETTING_STYLE[(bn, init)])
            if key == "train_loss":
                ax.axhline(CHANCE_LOSS, color="grey", linewidth=0.8, linestyle="--")
                ax.text(depths[0], CHANCE_LOSS * 0.9, "chance", fontsize=7, color="grey",
                        va="top")
            else:
                ax.axhline(1.0, color="grey", linewidth=0.8, linestyle="--")
            ax.set_xscale("log", base=2)
            ax.set_yscale("log")
            ax.set_xticks(depths, [str(d) for d in depths])
            ax.minorticks_off()
            ax.grid(True, alpha=0.3)
            ax.set_title(act, fontsize=10)
            ax.set_xlabel("depth (hidden layers)", fontsize=8)
            if c == 0:
                ax.set_ylabel(ylabel, fontsize=8)
            ax.tick_params(labelsize=7)
        axes[0][0].legend(fontsize=7)
        fig.suptitle(title, fontsize=11)
        fig.tight_layout()
        fig.savefig(out / name, dpi=100)
        plt.close(fig)
        files.append(name)
    return files, None


# ------------------------------------------------------------------ command line



def _positive(text: str) -> int:
    value = int_list(text)
    if len(value) != 1:
        raise argparse.ArgumentTypeError(f"expected one positive integer, got {text!r}")
    return value[0]


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="gradkern vanishing",
        description="The vanishing-gradient experiment: per-layer gradient norms at "
                    "initialization and the loss after a short training on digits, for "
                    "depths × sigmoid/tanh/relu × batch normalization off/on × naive "
                    "N(0, 0.01²) or recommended (He/Xavier) initialization. Writes "
                    "report.md, report.json and PNG plots to --out.")
    p.add_argument("--quick", action="store_true",
                   help=f"depths {','.join(map(str, QUICK_DEPTHS))} and {QUICK_EPOCHS} "
                        "epochs: a few seconds")
    p.add_argument("--out", default=None,
                   help="report directory (default: print the tables only)")
    p.add_argument("--backend", default="auto", help="gradkern backend (default: auto)")
    p.add_argument("--seed", type=int, default=0, help="weights, data split and order")
    p.add_argument("--epochs", type=_positive, default=None,
                   help=f"training epochs per network (default {EPOCHS}, --quick "
                        f"{QUICK_EPOCHS})")
    p.add_argument("--depths", type=int_list, default=None,
                   help="hidden layers, comma-separated (default "
                        f"{','.join(map(str, DEPTHS))})")
    p.add_argument("--width", type=_positive, default=WIDTH,
                   help="units per hidden layer (default %(default)s)")
    p.add_argument("--threads", type=_positive, default=1,
                   help="threads for the backends and BLAS (default 1: the networks are "
                        "small, and one thread is the fastest and steadiest on a busy machine)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    """Entry point of `gradkern vanishing`; returns the exit status."""
    args = build_parser().parse_args(sys.argv[1:] if argv is None else list(argv))
    if args.seed < 0:
        print("gradkern vanishing: error: --seed must be >= 0", file=sys.stderr)
        return 2
    try:
        backend = _backends.get(args.backend).name
    except (ValueError, KeyError, ImportError) as exc:
        print(f"gradkern vanishing: error: {exc}", file=sys.stderr)
        return 2
    if args.out:  # before the run: a whole run must not end in a folder it cannot write
        from .cli import writable_dir

        writable_dir(args.out, "--out")
    depths = args.depths or (QUICK_DEPTHS if args.quick else DEPTHS)
    epochs = args.epochs or (QUICK_EPOCHS if args.quick else EPOCHS)
    before = get_threads()
    set_threads(args.threads)
    try:
        results = run(depths, epochs, backend, args.seed, args.width,
                      progress=not args.no_progress)
    finally:
        set_threads(before)
    results["config"]["threads"] = args.threads
    print("first-layer / last-layer gradient norm at initialization:")
    print(ratio_table(results))
    print()
    print(f"training loss / test accuracy after {epochs} epochs:")
    print(training_table(results))
    if args.out:
        files = write_report(results, args.out)
        print(f"\nwrote {', '.join(files)} to {args.out}")
    return 0


if __name__ == "__main__":
    from gradkern.cli import run_guarded

    sys.exit(run_guarded(main))
