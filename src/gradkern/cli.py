"""The `gradkern` command line: demo, train, bench, check, vanishing, backends."""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from ._args import int_list
from ._markdown import table as _table
from .contract import Loss, names

DEMO_SIZES = [256, 128]  # hidden layers of the demo model
DEMO_EPOCHS = 30


# ------------------------------------------------------------ errors and destinations
def _debug() -> bool:
    return os.environ.get("GRADKERN_DEBUG", "") not in ("", "0")


def describe(exc: BaseException) -> str:
    """One line saying what went wrong, without a traceback."""
    from .model import TrainingDiverged

    if isinstance(exc, OSError) and exc.strerror and exc.filename is not None:
        msg = f"{exc.filename}: {exc.strerror}"
        if exc.filename2 is not None:
            msg += f" (-> {exc.filename2})"
    else:
        msg = str(exc) or type(exc).__name__
    if isinstance(exc, TrainingDiverged):
        msg = f"training diverged: {msg}"
    elif isinstance(exc, MemoryError):
        msg = f"out of memory: {msg}"
    return " ".join(msg.split())


def run_guarded(func, *args) -> int:
    """Run a command; the expected failures become one line on stderr and an exit status
    (2 bad input, 1 divergence or no memory, 130 Ctrl-C). Any other exception is a bug and
    keeps its traceback; GRADKERN_DEBUG=1 shows the traceback of every one."""
    from .checkpoint import CheckpointError
    from .distributed import DistributedError
    from .model import TrainingDiverged

    try:
        return int(func(*args) or 0)
    except KeyboardInterrupt:
        if _debug():
            raise
        print("gradkern: interrupted", file=sys.stderr, flush=True)
        return 130
    except (CheckpointError, TrainingDiverged, MemoryError, ValueError, TypeError, OSError,
            ImportError, DistributedError) as exc:
        if _debug():
            raise
        print(f"gradkern: error: {describe(exc)}", file=sys.stderr, flush=True)
        return 1 if isinstance(exc, (TrainingDiverged, MemoryError, DistributedError)) else 2


def _probe(directory: Path, option: str, path) -> None:
    """Create and remove a file in `directory`: the only sure test that we may write there."""
    try:
        fd, tmp = tempfile.mkstemp(prefix=".gradkern-probe-", dir=directory)
    except OSError as exc:
        cls = PermissionError if exc.errno in (errno.EACCES, errno.EPERM) else OSError
        raise cls(f"{option} {path}: cannot write in {directory}: "
                  f"{exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(tmp)


def writable_file(path, option: str) -> Path:
    """Check, before any work, that a file can be written at `path` (its folder exists and
    takes new files; it is not a directory nor a device)."""
    if not str(path):
        raise ValueError(f"{option}: empty path")
    p = Path(path)
    if p.is_dir():
        raise IsADirectoryError(f"{option} {path}: is a directory; give a file name")
    if p.exists() and not p.is_file():
        raise OSError(f"{option} {path}: exists and is not a regular file")
    parent = p.parent
    if not parent.exists():
        raise FileNotFoundError(f"{option} {path}: folder {parent} does not exist")
    if not parent.is_dir():
        raise NotADirectoryError(f"{option} {path}: {parent} is not a folder")
    _probe(parent, option, path)
    return p


def writable_dir(path, option: str) -> Path:
    """Check, before any work, that `path` is or can be made a folder we can write in
    (nothing is created)."""
    if not str(path):
        raise ValueError(f"{option}: empty path")
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise NotADirectoryError(f"{option} {path}: exists and is not a folder")
    base = p
    while not base.exists():  # the nearest existing ancestor is where mkdir starts
        base = base.parent
    if not base.is_dir():
        raise NotADirectoryError(f"{option} {path}: {base} is not a folder")
    _probe(base, option, path)
    return p


def _memory_available() -> int | None:
    """Bytes this process may still allocate: available RAM, bounded by RLIMIT_AS."""
    avail = None
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    avail = int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    if avail is None:
        try:
            avail = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            pass
    try:
        import resource

        soft, _ = resource.getrlimit(resource.RLIMIT_AS)
        if soft != resource.RLIM_INFINITY and soft > 0:
            avail = soft if avail is None else min(avail, soft)
    except (ImportError, OSError, ValueError):
        pass
    return avail


def check_training_memory(sizes: list[int], dtype: str, optimizer: str, momentum: float,
                          batch: int) -> None:
    """Refuse a model whose training buffers cannot fit: parameters, gradients, optimizer
    state and one batch of activations and their gradients (a lower bound)."""
    n_params = sum(a * b + b for a, b in zip(sizes[:-1], sizes[1:], strict=True))
    # state buffers of the parameters' size (SGD allocates its momentum buffer anyway)
    states = {"adam": 2, "adamw": 2, "rmsprop": 2 if momentum else 1}.get(optimizer, 1)
    item = np.dtype(dtype).itemsize
    need = n_params * item * (2 + states) + 2 * max(1, batch) * sum(sizes) * item
    avail = _memory_available()
    if avail is not None and need > avail:
        gib = 2.0 ** 30
        raise ValueError(f"the model {sizes} has {n_params:,} parameters; training it needs "
                         f"at least {need / gib:.1f} GiB and {avail / gib:.1f} GiB is "
                         "available: use smaller --hidden sizes")


# --------------------------------------------------------------------- backends
def cmd_backends(args) -> int:
    import gradkern as gk

    rows = []
    for name, state in gk.backends.status().items():
        detail = ""
        if state == "available":
            info = gk.backends.info(name)
            detail = ", ".join(f"{k}={v}" for k, v in info.items() if k != "warning")
            if "warning" in info:
                detail += f" — WARNING: {info['warning']}"
        rows.append([name, "yes" if state == "available" else "no",
                     detail if state == "available" else state])
    print(_table(["backend", "available", "details / reason"], rows))
    print(f"\ndefault (auto): {gk.backends.default_name()}   threads: {gk.get_threads()}   "
          f"GRADKERN_BACKEND={os.environ.get('GRADKERN_BACKEND', '')!r}")
    return 0


# ------------------------------------------------------------------------ train
def _build_parser_train(sub) -> None:
    p = sub.add_parser("train", help="train an MLP on a data set or a .csv/.npz file")
    p.add_argument("--data", default="digits",
                   help="digits, breast_cancer, wine, iris, diabetes, regression, spirals, "
                        "or a path to a .csv/.npz (default: digits)")
    p.add_argument("--target", default=None, help="target column of a .csv (default: last), "
                   "or the .npy of y with --data X.npy")
    p.add_argument("--mmap", action="store_true",
                   help="memory-map an uncompressed .npz (an .npy always is) and stream it: "
                        "rows used as stored, the last 20%% held out for the test figures")
    p.add_argument("--hidden", type=int_list, default=(256, 128),
                   help="hidden layer sizes, comma-separated (default 256,128)")
    p.add_argument("--activation", default="relu")
    p.add_argument("--loss", default=None, choices=list(names(Loss)),
                   help="default: inferred from the task")
    p.add_argument("--huber-delta", type=float, default=1.0, help="the huber loss's delta")
    p.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--optimizer", default="adam",
                   choices=["sgd", "adam", "adamw", "rmsprop", "adagrad"])
    p.add_argument("--lr", type=float, default=None,
                   help="default: 1e-3 (Adam, AdamW), 0.05 (SGD), 0.01 (RMSprop, Adagrad)")
    p.add_argument("--momentum", type=float, default=None,
                   help="SGD momentum (default 0.9), or RMSprop's (default 0)")
    p.add_argument("--weight-decay", type=float, default=0.0)
    p.add_argument("--batchnorm", action="store_true")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--dtype", default="float32", choices=["float32", "float64"])
    p.add_argument("--backend", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--patience", type=int, default=None,
                   help="early stopping patience, on the validation split's loss")
    p.add_argument("--validation-split", type=float, default=None, metavar="F",
                   help="hold out this fraction of the TRAINING rows (stratified) as "
                        "validation data; default 0.1 with --patience, else none. The test "
                        "split is only used for the final test figures")
    p.add_argument("--save", default=None, help="write the trained model to this path")
    p.add_argument("--scheduler", default="none", choices=list(SCHEDULERS),
                   help="learning-rate schedule (gk.optim.lr_scheduler): onecycle (per step, "
                        "up to --max-lr), cosine (to 0 over the epochs), step (x --gamma every "
                        "--step-size epochs), exponential (x --gamma a epoch), plateau (x "
                        "--gamma when val_loss/loss stalls for --plateau-patience epochs)")
    p.add_argument("--max-lr", type=float, default=None,
                   help="onecycle's peak rate (default 10 x --lr)")
    p.add_argument("--step-size", type=int, default=10, help="step's period in epochs")
    p.add_argument("--gamma", type=float, default=None,
                   help="step/exponential/plateau factor (default 0.5, 0.95, 0.1)")
    p.add_argument("--plateau-patience", type=int, default=5)
    p.add_argument("--warmup", type=int, default=0, metavar="E",
                   help="epochs of linear warm-up (from 0.1 x lr) before cosine, step, "
                        "exponential")
    p.add_argument("--log", default=None, metavar="FILE.csv",
                   help="write one CSV row per epoch (loss, validation figures, lr, seconds)")
    p.add_argument("--quiet", action="store_true", help="no per-epoch lines or progress bar")
    p.add_argument("--distributed", action="store_true",
                   help="data-parallel over MPI, as `mpirun -n K gradkern train ... "
                        "--distributed`: --batch-size rows per rank and step (see "
                        "docs/distributed.md); rank 0 alone prints and saves")
    p.set_defaults(func=cmd_train)


SCHEDULERS = ("none", "onecycle", "cosine", "step", "exponential", "plateau")


def _make_scheduler(args, opt, steps_per_epoch: int):
    """The --scheduler of `gradkern train` on `opt`, or None."""
    import gradkern as gk

    S = gk.optim.lr_scheduler
    name, epochs = args.scheduler, args.epochs
    if name == "none":
        if args.warmup:
            raise ValueError("--warmup needs a --scheduler (cosine, step or exponential)")
        return None
    if args.warmup < 0:
        raise ValueError(f"--warmup must be >= 0 epochs, got {args.warmup}")
    if name == "onecycle":
        if args.warmup:
            raise ValueError("--warmup: onecycle warms up by itself (its first 30% of steps)")
        return S.OneCycleLR(opt, max_lr=args.max_lr if args.max_lr is not None else 10 * opt.lr,
                            epochs=epochs, steps_per_epoch=steps_per_epoch)
    if name == "plateau":
        if args.warmup:
            raise ValueError("--warmup does not combine with plateau")
        return S.ReduceLROnPlateau(opt, factor=0.1 if args.gamma is None else args.gamma,
                                   patience=args.plateau_patience)
    rest = max(1, epochs - args.warmup)
    if name == "cosine":
        main = S.CosineAnnealingLR(opt, T_max=rest)
    elif name == "step":
        main = S.StepLR(opt, step_size=args.step_size,
                        gamma=0.5 if args.gamma is None else args.gamma)
    else:
        main = S.ExponentialLR(opt, gamma=0.95 if args.gamma is None else args.gamma)
    if not args.warmup:
        return main
    warm = S.LinearLR(opt, start_factor=0.1, total_iters=args.warmup)
    return S.SequentialLR(opt, [warm, main], milestones=[args.warmup])


def _make_optimizer(name: str, lr: float | None, momentum: float, weight_decay: float):
    import gradkern as gk

    if name == "sgd":
        return gk.optim.SGD(lr=lr if lr is not None else 0.05,
                            momentum=0.9 if momentum is None else momentum,
                            weight_decay=weight_decay)
    if name == "rmsprop":
        return gk.optim.RMSprop(lr=lr if lr is not None else 0.01,
                                momentum=momentum or 0.0, weight_decay=weight_decay)
    if name == "adagrad":
        return gk.optim.Adagrad(lr=lr if lr is not None else 0.01, weight_decay=weight_decay)
    cls = gk.optim.Adam if name == "adam" else gk.optim.AdamW
    return cls(lr=lr if lr is not None else 1e-3, weight_decay=weight_decay)


def cmd_train(args) -> int:
    import gradkern as gk

    comm = None
    if args.distributed:
        from .distributed import world

        comm = world()

    if args.save:  # before any work: a run must not end in a path it cannot write
        writable_file(args.save, "--save")
    if args.log:
        writable_file(args.log, "--log")
    if args.threads:
        gk.set_threads(args.threads)
    if args.data.endswith(".npy") or (args.mmap and args.data.endswith(".npz")):
        data = gk.datasets.open_mapped(args.data, target=args.target)  # streamed from disk
    elif args.mmap:
        raise ValueError(f"--mmap reads an .npy (with --target y.npy) or an uncompressed "
                         f".npz, not {args.data}")
    else:
        data = (gk.datasets.load_file(args.data, target=args.target, seed=args.seed)
                if args.target is not None else gk.datasets.load(args.data, seed=args.seed))
    hidden = list(args.hidden)
    loss = args.loss or data.loss
    sizes = [data.n_features, *hidden, data.n_outputs]
    split = args.validation_split
    if split is None and args.patience is not None:
        split = 0.1
    if split is not None and not 0 < split < 1:
        raise ValueError(f"--validation-split must be a fraction in (0, 1), got {split}")
    preprocessing = None
    if args.save:  # what predict needs to read raw rows, checked before the work
        from .checkpoint import check_preprocessing

        preprocessing = check_preprocessing("the data's preprocessing", data.preprocessing(),
                                            sizes[0], sizes[-1], loss, error=ValueError)
    check_training_memory(sizes, args.dtype, args.optimizer, args.momentum,
                          min(args.batch_size, len(data.X_train)))
    model = gk.MLP(sizes, activation=args.activation,
                   loss=loss, dtype=args.dtype, backend=args.backend, seed=args.seed,
                   batchnorm=args.batchnorm, dropout=args.dropout, huber_delta=args.huber_delta)
    opt = _make_optimizer(args.optimizer, args.lr, args.momentum, args.weight_decay)
    n_train = len(data.X_train)
    if split is not None and args.scheduler == "onecycle":  # the rows fit will train on
        from .trainer import hold_out

        state = model.rng.bit_generator.state
        n_train = len(hold_out(model, np.asarray(data.y_train), split)[0])
        model.rng.bit_generator.state = state
    bs = min(args.batch_size, n_train)
    drop = 1 if args.batchnorm and n_train % bs == 1 else 0
    sched = _make_scheduler(args, opt, max(1, -(-(n_train - drop) // bs)))
    callbacks = [gk.CSVLogger(args.log)] if args.log else None
    print(f"data: {data}\nmodel: {model}\noptimizer: {opt!r}"
          + (f"\nscheduler: {sched!r}" if sched is not None else ""))
    if split is not None:
        what = (f"early stopping (patience {args.patience}) on val_loss of"
                if args.patience is not None else "validation figures on")
        print(f"{what} a {split:g} split of the training rows (stratified for classes); "
              f"the {len(data.X_test)} test rows are used only for the test figures at the end")
    def show(epoch: int, figures: dict) -> None:
        line = "  ".join(f"{k} {v:.4f}" for k, v in figures.items())
        print(f"epoch {epoch:3d}/{args.epochs}  {line}", flush=True)

    t0 = time.perf_counter()
    # a step that overflows is caught by fit (TrainingDiverged, one line below); NumPy's
    # RuntimeWarnings about it on the way would only bury that line under source excerpts
    with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
        history = model.fit(data.X_train, data.y_train, epochs=args.epochs,
                            batch_size=args.batch_size, optimizer=opt,
                            validation_split=split,
                            early_stopping=args.patience, progress=False,
                            on_epoch=None if args.quiet else show, comm=comm,
                            scheduler=sched, callbacks=callbacks)
    if history.stopped_early:
        print(f"early stop after epoch {history.epochs_run}: best epoch {history.best_epoch}")
    seconds = time.perf_counter() - t0
    result = model.evaluate(data.X_test, data.y_test)
    figures = ", ".join(f"{k} {v:.4f}" for k, v in result.items())
    print(f"\ntest: {figures}   ({history.epochs_run} epochs, {seconds:.2f} s, "
          f"backend {model.backend_name}; {len(data.X_test)} test rows, never trained or "
          "tuned on)")
    if args.log:
        print(f"per-epoch log: {args.log}")
    if args.save and (comm is None or comm.Get_rank() == 0):
        model.save(args.save, preprocessing=preprocessing)
        print(f"saved to {args.save} (with its preprocessing: gradkern predict --model "
              f"{args.save} --data FILE)")
    return 0


# ---------------------------------------------------------------------- predict
def _build_parser_predict(sub) -> None:
    p = sub.add_parser("predict",
                       help="predict with a saved model on raw rows of a .csv/.npy/.npz")
    p.add_argument("--model", required=True, help="a checkpoint written by train --save")
    p.add_argument("--data", required=True,
                   help="a .csv with the model's input columns by name (its target column, "
                        "if present, is ignored), a .npy array (rows, features) or an .npz "
                        "with that array as X (as train reads it; a y in it is ignored)")
    p.add_argument("--out", default=None, help="write the predictions here (default: stdout)")
    p.add_argument("--proba", action="store_true",
                   help="class probabilities, one column per class label")
    p.add_argument("--backend", default="auto")
    p.set_defaults(func=cmd_predict)


def _cell(v) -> str:
    return repr(float(v)) if isinstance(v, (float, np.floating)) else str(v)


def cmd_predict(args) -> int:
    import csv

    import gradkern as gk
    from gradkern.model import load_preprocessing

    if args.out:
        writable_file(args.out, "--out")
    model = gk.load(args.model, backend=args.backend)
    pre = load_preprocessing(args.model, model)
    if args.proba and not model.is_classifier:
        raise ValueError(f"--proba needs a classifier; {args.model} is a regression model "
                         f"(loss {model.loss})")
    if pre is None:
        print(f"gradkern: note: {args.model} holds no preprocessing (a checkpoint not written "
              "by gradkern train): the inputs are used as they are, classes are numbered "
              "0..K-1", file=sys.stderr, flush=True)
        X = gk.datasets.read_rows(args.data, model.input_size)
    else:
        X = gk.datasets.read_rows(args.data, model.input_size, pre["features"], pre["target"])
        X = (X - np.asarray(pre["x_mean"])) / np.asarray(pre["x_scale"])
    name = (pre or {}).get("target") or "prediction"
    if model.is_classifier:
        classes = pre["classes"] if pre else list(range(max(2, model.n_outputs)))
        if args.proba:
            header, rows = [str(c) for c in classes], model.predict_proba(X).tolist()
        else:
            pred = model.predict(X)
            if pred.ndim == 1:
                header, rows = [name], [[classes[i]] for i in pred]
            else:  # one 0/1 column per label
                header, rows = [str(c) for c in classes], pred.tolist()
    else:
        raw = model.predict_raw(X).astype(np.float64)
        if pre:
            raw = raw * np.asarray(pre["y_scale"]) + np.asarray(pre["y_mean"])
        header = [name] if raw.shape[1] == 1 else [f"{name}_{k}" for k in range(raw.shape[1])]
        rows = raw.tolist()
    if args.out:
        with open(args.out, "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(header)
            w.writerows([_cell(v) for v in r] for r in rows)
        print(f"{len(rows)} predictions written to {args.out}", file=sys.stderr)
    else:
        w = csv.writer(sys.stdout, lineterminator="\n")
        w.writerow(header)
        w.writerows([_cell(v) for v in r] for r in rows)
    return 0


# ------------------------------------------------------------------------- demo
def _demo_sklearn(data, epochs: int, seed: int) -> dict:
    """scikit-learn's MLPClassifier on the demo task: same hidden sizes, Adam (lr 1e-3,
    no L2: alpha=0), batch 64, `epochs` epochs exactly (tol=0 and n_iter_no_change=epochs:
    it never stops early; its ConvergenceWarning for running them all is expected)."""
    import warnings

    import sklearn
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.neural_network import MLPClassifier

    clf = MLPClassifier(hidden_layer_sizes=tuple(DEMO_SIZES), solver="adam",
                        learning_rate_init=1e-3, alpha=0.0, batch_size=64, max_iter=epochs,
                        tol=0.0, n_iter_no_change=epochs, shuffle=True, random_state=seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        t0 = time.perf_counter()
        clf.fit(data.X_train, data.y_train)
        total = time.perf_counter() - t0
    return {"backend": f"scikit-learn {sklearn.__version__} MLPClassifier",
            "test_accuracy": float(clf.score(data.X_test, data.y_test)),
            "seconds_per_epoch": total / clf.n_iter_, "first_call_seconds": None,
            "max_grad_diff": None, "curve": [float(v) for v in clf.loss_curve_],
            "timing": "mean (fit / epochs)"}


def _demo_torch(data, sizes: list[int], epochs: int, seed: int, weights, xb, yb,
                ref_grads) -> dict:
    """PyTorch eager on the demo task: the same network with the same initial weights,
    Adam lr 1e-3, batch 64, the data in the same order each epoch as our models draw it."""
    import torch

    def build():
        layers = []
        for i, (W, b) in enumerate(weights):
            lin = torch.nn.Linear(W.shape[0], W.shape[1])
            with torch.no_grad():
                lin.weight.copy_(torch.from_numpy(W.T.copy()))
                lin.bias.copy_(torch.from_numpy(b.copy()))
            layers.append(lin)
            if i < len(weights) - 1:
                layers.append(torch.nn.ReLU())
        return torch.nn.Sequential(*layers)

    X = torch.from_numpy(np.ascontiguousarray(data.X_train, dtype=np.float32))
    y = torch.from_numpy(data.y_train.astype(np.int64))
    lossf = torch.nn.CrossEntropyLoss()

    def epoch(net, opt, perm) -> float:
        total = 0.0
        for s in range(0, len(perm), 64):
            idx = torch.from_numpy(perm[s : s + 64])
            opt.zero_grad()
            loss = lossf(net(X[idx]), y[idx])
            loss.backward()
            opt.step()
            total += float(loss.detach()) * len(idx)
        return total / len(perm)

    t0 = time.perf_counter()  # first call, as for our backends: a fresh net, 128 rows
    warm = build()
    epoch(warm, torch.optim.Adam(warm.parameters(), lr=1e-3), np.arange(128))
    first = time.perf_counter() - t0
    net = build()
    net.zero_grad()
    lossf(net(torch.from_numpy(np.asarray(xb, dtype=np.float32))),
          torch.from_numpy(yb.astype(np.int64))).backward()
    lins = [m for m in net if isinstance(m, torch.nn.Linear)]
    flat = np.concatenate([np.concatenate([m.weight.grad.numpy().T.ravel(),
                                           m.bias.grad.numpy().ravel()]) for m in lins])
    opt = torch.optim.Adam(net.parameters(), lr=1e-3)
    rng = np.random.default_rng(seed)  # the order our models draw: permutation, then seeds
    curve, secs = [], []
    n = len(data.X_train)
    for _ in range(epochs):
        perm = rng.permutation(n)
        rng.integers(0, 2**64, size=-(-n // 64), dtype=np.uint64)  # our dropout seeds
        t0 = time.perf_counter()
        curve.append(epoch(net, opt, perm))
        secs.append(time.perf_counter() - t0)
    with torch.no_grad():
        pred = net(torch.from_numpy(np.asarray(data.X_test, dtype=np.float32))).argmax(1)
    return {"backend": f"PyTorch {torch.__version__} (eager, {torch.get_num_threads()} "
                       "threads)",
            "test_accuracy": float((pred.numpy() == data.y_test).mean()),
            "seconds_per_epoch": float(np.median(secs)), "first_call_seconds": first,
            "max_grad_diff": float(np.max(np.abs(flat - ref_grads))), "curve": curve,
            "timing": "median"}


def demo_table(epochs: int = DEMO_EPOCHS, backends: list[str] | None = None, seed: int = 0,
               progress: bool = True, compare: bool = True) -> tuple[list[dict], str]:
    """Train the demo model on digits with each backend, then (compare=True) with
    scikit-learn's MLPClassifier and, when installed, PyTorch, all in this run; rows of
    figures (each with its learning curve, the mean training loss per epoch) and the table."""
    import importlib.util

    import gradkern as gk

    data = gk.datasets.load("digits", seed=seed)
    names = backends or gk.backends.available()
    sizes = [data.n_features, *DEMO_SIZES, data.n_outputs]
    # one fixed batch for the gradient comparison
    xb, yb = data.X_train[:64], data.y_train[:64]
    ref_grads = None
    results = []
    weights0 = None
    for name in names:
        # first call on a fresh model: includes any JIT compilation or lazy loading
        warm = gk.MLP(sizes, loss="cross_entropy", backend=name, seed=seed)
        t0 = time.perf_counter()
        warm.fit(data.X_train[:128], data.y_train[:128], epochs=1, batch_size=64,
                 progress=False)
        first_call = time.perf_counter() - t0

        model = gk.MLP(sizes, loss="cross_entropy", backend=name, seed=seed)
        weights0 = model.get_weights()
        _, grads = model.gradients(xb, yb)
        flat = np.concatenate([np.concatenate([a.ravel(), b.ravel()]) for a, b in grads])
        if ref_grads is None:
            ref_grads = flat
        if progress:
            print(f"training on {name} ...", flush=True)
        h = model.fit(data.X_train, data.y_train, epochs=epochs, batch_size=64,
                      optimizer=gk.optim.Adam(lr=1e-3), progress=progress)
        ev = model.evaluate(data.X_test, data.y_test)
        sec = float(np.median(h["seconds"]))
        results.append({"backend": name, "test_accuracy": ev["accuracy"],
                        "test_loss": ev["loss"], "seconds_per_epoch": sec,
                        "first_call_seconds": first_call,
                        "max_grad_diff": float(np.max(np.abs(flat - ref_grads))),
                        "curve": list(h["loss"]), "timing": "median"})
    if compare and importlib.util.find_spec("sklearn") is not None:
        if progress:
            print("training scikit-learn's MLPClassifier ...", flush=True)
        results.append(_demo_sklearn(data, epochs, seed))
    if compare and importlib.util.find_spec("torch") is not None and weights0 is not None:
        if progress:
            print("training PyTorch ...", flush=True)
        results.append(_demo_torch(data, sizes, epochs, seed, weights0, xb, yb, ref_grads))
    base = next((r["seconds_per_epoch"] for r in results if r["backend"] == "numpy"), None)
    rows = []

    def fmt(v, spec):
        return "n/a" if v is None else format(v, spec)

    for r in results:
        speed = f"{base / r['seconds_per_epoch']:.1f}×" if base else "n/a"
        r["speed_vs_numpy"] = base / r["seconds_per_epoch"] if base else None
        ms = f"{r['seconds_per_epoch'] * 1e3:.1f}" + (" (mean)" if r["timing"] != "median"
                                                     else "")
        rows.append([r["backend"], f"{r['test_accuracy']:.4f}", ms, speed,
                     fmt(r["first_call_seconds"], ".2f"), fmt(r["max_grad_diff"], ".2e")])
    table = _table(["backend", "test accuracy", "ms/epoch (median)", "speed vs numpy",
                    "first call s (incl. compile)", f"max |grad − {names[0]}| (one batch)"], rows)
    return results, table


def plot_curves(results: list[dict], path) -> None:
    """The learning curves (mean training loss per epoch) of every engine, one PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    styles = ["-", "--", ":", "-."]
    for i, r in enumerate(results):
        ax.plot(np.arange(1, len(r["curve"]) + 1), r["curve"], styles[i % len(styles)],
                marker="o", markersize=3, label=r["backend"])
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("training loss (cross-entropy, mean over the epoch)")
    ax.set_title(f"digits, MLP {[64, *DEMO_SIZES, 10]}, Adam lr 1e-3, batch 64")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def cmd_demo(args) -> int:
    import importlib.util

    import gradkern as gk

    out = writable_dir(args.out, "--out") if args.out else None  # before any work
    if args.threads:
        gk.set_threads(args.threads)
    print(f"gradkern {gk.__version__} demo: MLP {[64, *DEMO_SIZES, 10]} (relu, cross_entropy, "
          f"float32) on scikit-learn digits, Adam lr 1e-3, batch 64, {args.epochs} epochs\n")
    status = gk.backends.status()
    for name, state in status.items():
        if state != "available":
            print(f"  backend {name}: not available ({state})")
    for mod, what in (("sklearn", "scikit-learn"), ("torch", "PyTorch")):
        if not args.no_compare and importlib.util.find_spec(mod) is None:
            print(f"  {what}: not installed, no row")
    backends = args.backends.split(",") if args.backends else None
    results, table = demo_table(epochs=args.epochs, backends=backends, progress=not args.quiet,
                                compare=not args.no_compare)
    print()
    print(table)
    print("\nEvery row trained in this run on the same split. PyTorch starts from the first "
          "backend's initial weights and sees the rows in the same order; scikit-learn "
          "initializes and shuffles by its own rule (alpha=0, tol=0: all epochs run); its "
          "ms/epoch is its fit time over the epochs.")
    if out is not None:
        out.mkdir(parents=True, exist_ok=True)
        (out / "demo.md").write_text(table + "\n", encoding="utf-8")
        written = [out / "demo.md"]
        if importlib.util.find_spec("matplotlib") is not None:
            plot_curves(results, out / "learning_curves.png")
            written.append(out / "learning_curves.png")
        else:
            print("matplotlib is not installed: no learning-curve plot")
        print("\nwrote " + ", ".join(str(p) for p in written))
    return 0


# ---------------------------------------------------------------------- parsing
def _delegate(module: str):
    """A subcommand implemented in its own module, with its own argument parser."""
    def run(args) -> int:
        mod = importlib.import_module(f"gradkern.{module}")
        return int(mod.main(args.rest) or 0)
    return run


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="gradkern",
                                     description="Train MLPs by backpropagation on the CPU.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command", metavar="command")

    p = sub.add_parser("demo", help="train the demo model on digits with every backend")
    p.add_argument("--epochs", type=int, default=DEMO_EPOCHS)
    p.add_argument("--backends", default=None, help="comma-separated (default: all available)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--quiet", action="store_true")
    p.add_argument("--out", default="gradkern-demo",
                   help="folder for demo.md (the table) and learning_curves.png "
                        "(default: gradkern-demo; '' writes nothing)")
    p.add_argument("--no-compare", action="store_true",
                   help="only gradkern's backends: no scikit-learn or PyTorch rows")
    p.set_defaults(func=cmd_demo)

    _build_parser_train(sub)
    _build_parser_predict(sub)

    p = sub.add_parser("backends", help="list backends, their availability or the reason")
    p.set_defaults(func=cmd_backends)

    for name, module, text in (
        ("bench", "bench", "benchmark report: step time against depth and width"),
        ("check", "check", "cross-check every backend: finite differences, reference, PyTorch"),
        ("vanishing", "vanishing", "the vanishing-gradient experiment"),
    ):
        p = sub.add_parser(name, help=text, add_help=False)
        p.add_argument("rest", nargs=argparse.REMAINDER)
        p.set_defaults(func=_delegate(module))
    return parser


DELEGATED = ("bench", "check", "vanishing")  # subcommands with their own argument parsers


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser()
    if argv and argv[0] in DELEGATED:
        # handed over whole: argparse's REMAINDER refuses a first argument starting with "-"
        args = argparse.Namespace(version=False, func=_delegate(argv[0]), rest=argv[1:])
    else:
        args = parser.parse_args(argv)
    if args.version:
        import gradkern as gk

        print(gk.__version__)
        return 0
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return run_guarded(args.func, args)


if __name__ == "__main__":
    sys.exit(main())
