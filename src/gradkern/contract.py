"""The contract every engine reads, declared once: codes, plain-data columns, constants.

A model compiles to plain data (`plan.Plan`: an int64 row per layer in `ops`, a float64
row in `fargs`; `optim.Optimizer.hyper`), and three engines interpret it: the NumPy
reference, the Numba kernels and the C library. Every code and column they share is named
here and nowhere else. The C side does not repeat them by hand: the cffi build
(`_build_c.py`) writes `gk_contract.h` from `c_declarations()` below, and a test reads the
values back from the compiled library and compares them one by one.

Numba reads the members as compile-time integers (`int(Act.RELU)` at import); Python code
compares against the members themselves. No other module writes a raw code.
"""

from __future__ import annotations

from enum import IntEnum


class Layer(IntEnum):
    """Layer kinds: `Plan.ops[i, Ops.KIND]`."""

    DENSE = 0
    ACTIVATION = 1
    BATCHNORM = 2
    DROPOUT = 3


class Act(IntEnum):
    """Activation kinds: `Plan.ops[i, Ops.ACT]`; the names are the public spellings."""

    IDENTITY = 0
    RELU = 1
    LEAKY_RELU = 2
    SIGMOID = 3
    TANH = 4
    GELU = 5
    SILU = 6


class Loss(IntEnum):
    """Loss kinds: `Plan.loss_code`."""

    MSE = 0
    CROSS_ENTROPY = 1
    BINARY_CROSS_ENTROPY = 2
    L1 = 3     # torch.nn.L1Loss: mean |pred - target|; its gradient at 0 is 0
    HUBER = 4  # torch.nn.HuberLoss(delta): the plan's delta (Plan.delta)


class Opt(IntEnum):
    """Optimizer kinds: `Optimizer.kind`."""

    SGD = 0
    ADAM = 1      # Adam and AdamW (Hyper.DECOUPLED)
    RMSPROP = 2
    ADAGRAD = 3


class Ops(IntEnum):
    """Columns of `Plan.ops` (int64, one row per layer)."""

    KIND = 0      # a Layer
    IN = 1        # input features C
    OUT = 2       # output features OC
    PA = 3        # params offset of W (dense) or gamma (batchnorm)
    PB = 4        # params offset of b (dense) or beta (batchnorm)
    SA = 5        # state offset of running_mean (batchnorm)
    SB = 6        # state offset of running_var (batchnorm)
    ACT = 7       # an Act (activation layers)
    OUTOFF = 8    # per-row offset of this layer's output block in acts/dacts
    CACHE = 9     # offset of the fixed-size cache block (batchnorm: mean, var, rstd)
    CACHE_ROW = 10  # per-row offset of the batch-sized cache block (dropout mask)


class Fargs(IntEnum):
    """Columns of `Plan.fargs` (float64, one row per layer)."""

    P = 0         # dropout probability
    EPS = 1       # batchnorm epsilon
    MOMENTUM = 2  # batchnorm running-statistics momentum


class Hyper(IntEnum):
    """Columns of `Optimizer.hyper` (float64), read by every update kernel."""

    LR = 0
    MOMENTUM = 1
    DAMPENING = 2
    NESTEROV = 3   # 0 or 1
    WEIGHT_DECAY = 4
    BETA1 = 5
    BETA2 = 6
    EPS = 7
    DECOUPLED = 8  # 0 or 1: AdamW's decoupled weight decay
    ALPHA = 9      # RMSprop's smoothing constant
    CENTERED = 10  # 0 or 1: RMSprop divides by the centered second moment
    LR_DECAY = 11  # Adagrad: lr / (1 + (step - 1) * lr_decay)
    INITIAL_ACCUMULATOR_VALUE = 12  # Adagrad: where its sum of squares starts


# The state each optimizer keeps in `Optimizer.buf1`, `buf2`, `buf3`, by the names
# torch.optim's state_dict gives it. A slot an optimizer's configuration does not use is
# empty (SGD's momentum_buffer without momentum is allocated anyway; RMSprop's
# momentum_buffer without momentum and its grad_avg unless centered are not).
OPT_STATE: dict[Opt, tuple[str, ...]] = {
    Opt.SGD: ("momentum_buffer",),
    Opt.ADAM: ("exp_avg", "exp_avg_sq"),
    Opt.RMSPROP: ("square_avg", "momentum_buffer", "grad_avg"),
    Opt.ADAGRAD: ("sum",),
}
OPT_SLOTS = ("buf1", "buf2", "buf3")
# state that is a sum or average of squares: never negative (a checkpoint is checked)
OPT_NONNEGATIVE = frozenset({"exp_avg_sq", "square_avg", "sum"})


class Err(IntEnum):
    """Return codes of the C functions (0 or negative)."""

    OK = 0
    LABEL = -1      # a class label outside [0, K)
    INDEX = -2      # a permutation entry outside the data
    SHAPE = -3      # sizes that do not fit the plan
    WORKSPACE = -4  # a batch larger than the workspace
    KIND = -5       # an unknown layer, activation, loss or optimizer code
    PLAN = -6       # an offset of the plan outside its buffer


class Isa(IntEnum):
    """Instruction sets of the C GEMM and vector kernels."""

    GENERIC = 0
    AVX2 = 1
    AVX512 = 2


OPS_COLS = len(Ops)
FARGS_COLS = len(Fargs)
HYPER_COLS = len(Hyper)

# ---- constants every engine uses ----
LEAKY_SLOPE = 0.01               # leaky_relu(x) = x for x > 0, LEAKY_SLOPE * x otherwise
MASK64 = (1 << 64) - 1
GOLDEN = 0x9E3779B97F4A7C15      # splitmix64 increment: dropout mask of element e
LAYER_MIX = 0xD1B54A32D192ED03   # per-layer offset of the dropout seed
ALIGN_BYTES = 64                 # every tensor of the flat buffers starts on this boundary


def names(enum: type[IntEnum]) -> tuple[str, ...]:
    """Public spellings of an enum's members, in code order: ('identity', 'relu', ...)."""
    return tuple(m.name.lower() for m in sorted(enum, key=int))


def code(enum: type[IntEnum], name: str, what: str) -> int:
    """The code of a public name (`code(Act, "relu", "activation")`), or a ValueError."""
    if isinstance(name, str) and name.upper() in enum.__members__:
        return int(enum[name.upper()])
    raise ValueError(f"unknown {what} {name!r}; known: {', '.join(names(enum))}")


# the prefix each enum's members carry in C: GK_RELU, GK_K_KIND, GK_ERR_LABEL, ...
C_PREFIX = {Layer: "GK_", Act: "GK_", Loss: "GK_", Opt: "GK_", Ops: "GK_K_",
            Fargs: "GK_F_", Hyper: "GK_H_", Err: "GK_ERR_", Isa: "GK_ISA_"}
C_COUNTS = {"GK_OPS_COLS": OPS_COLS, "GK_FARGS_COLS": FARGS_COLS, "GK_HYPER_COLS": HYPER_COLS,
            "GK_N_ACTS": len(Act), "GK_N_LOSSES": len(Loss), "GK_N_LAYERS": len(Layer),
            "GK_N_OPTS": len(Opt)}
C_FLOATS = {"GK_LEAKY": LEAKY_SLOPE}
C_U64 = {"GK_GOLDEN": GOLDEN, "GK_LAYER_MIX": LAYER_MIX}


def c_enum_items() -> list[tuple[str, int]]:
    """(C name, value) of every integer code, as the C library's enum holds them."""
    items = []
    for enum, prefix in C_PREFIX.items():
        for m in enum:
            name = "GK_OK" if enum is Err and m is Err.OK else prefix + m.name
            items.append((name, int(m)))
    items += list(C_COUNTS.items())
    return items


def c_declarations() -> str:
    """The enum block of the C API (no preprocessor lines: cffi reads it as its cdef)."""
    lines = ["/* generated from src/gradkern/contract.py by _build_c.py: do not edit */",
             "enum {"]
    lines += [f"    {name} = {value}," for name, value in c_enum_items()]
    lines.append("};")
    return "\n".join(lines) + "\n"


def c_constants() -> str:
    """The floating-point and 64-bit constants, as #defines for the C sources only."""
    lines = ["/* generated from src/gradkern/contract.py by _build_c.py: do not edit */"]
    lines += [f"#define {name} {value!r}" for name, value in C_FLOATS.items()]
    lines += [f"#define {name} {value:#x}ULL" for name, value in C_U64.items()]
    return "\n".join(lines) + "\n"
