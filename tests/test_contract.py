"""The contract is declared once (gradkern.contract): the C library agrees with it value by
value, the public name lists are derived from it, and no other module writes a raw code."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

import gradkern
from gradkern import contract, optim, plan
from gradkern.backends import BackendUnavailable, get

SRC = Path(gradkern.__file__).resolve().parent

# names whose integer values are codes of the contract: comparing them with a literal, or
# indexing these arrays with one, is a raw code
CODE_NAMES = ("kind", "code", "act", "loss", "isa")
ROW_NAMES = ("ops", "fargs", "hyper", "row", "frow")


def _name(node) -> str:
    while isinstance(node, ast.Call) and node.args:  # int(kind) == 1
        node = node.args[0]
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    if isinstance(node, ast.Subscript):
        return _name(node.value)
    return ""


def _int_literal(node) -> bool:
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        node = node.operand
    return isinstance(node, ast.Constant) and type(node.value) is int


def _code_literal(node: ast.Compare) -> bool:
    """An integer literal compared for (in)equality, or a nonzero bound: `kind < 0` is a
    sign test and allowed, `kind > 5` hides the number of activations."""
    sides = [node.left, *node.comparators]
    eq = any(isinstance(op, (ast.Eq, ast.NotEq)) for op in node.ops)
    return any(_int_literal(s) and (eq or ast.literal_eval(s) != 0) for s in sides)


def raw_codes(source: str) -> list[tuple[int, str]]:
    """(line, text) of every raw code in a module's source."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            sides = [node.left, *node.comparators]
            names = [_name(s).lower() for s in sides]
            if _code_literal(node) and any(
                    n == c or n.endswith("_" + c) or n.startswith(c + "_")
                    for n in names for c in CODE_NAMES):
                found.append((node.lineno, ast.unparse(node)))
        elif isinstance(node, ast.Subscript) and _name(node.value).lower() in ROW_NAMES:
            index = node.slice.elts if isinstance(node.slice, ast.Tuple) else [node.slice]
            if _int_literal(index[-1]):
                found.append((node.lineno, ast.unparse(node)))
    return found


def test_the_detector_finds_raw_codes():
    bad = ("if kind == 0: pass\nif int(kind) == 1: pass\nx = hyper[5]\n"
           "y = ops[i, 3]\nif plan.loss_code == 1: pass\nif kind > 5: pass\n")
    assert len(raw_codes(bad)) == 6
    good = ("if kind == Act.RELU: pass\nx = hyper[Hyper.LR]\nif x.ndim == 1: pass\n"
            "if kind < 0 or kind >= len(Act): pass\n")
    assert raw_codes(good) == []


def test_no_raw_codes_outside_the_contract():
    offenders = []
    for path in sorted(SRC.rglob("*.py")):
        if path.name == "contract.py":
            continue
        for line, text in raw_codes(path.read_text()):
            offenders.append(f"{path.relative_to(SRC)}:{line}: {text}")
    assert not offenders, "raw codes (use gradkern.contract):\n" + "\n".join(offenders)


def test_public_names_derive_from_the_contract():
    assert plan.ACTIVATIONS == contract.names(contract.Act)
    assert plan.LOSSES == contract.names(contract.Loss)
    assert optim.SGD.kind == contract.Opt.SGD and optim.Adam.kind == contract.Opt.ADAM
    with pytest.raises(ValueError, match="known: identity, relu"):
        contract.code(contract.Act, "swish", "activation")


def test_c_library_agrees_with_the_contract_value_by_value():
    try:
        lib = get("c").lib
    except BackendUnavailable as exc:
        pytest.skip(f"C backend not available: {exc.reason}")
    items = contract.c_enum_items()
    assert len(items) > 40
    mismatched = [(name, value, getattr(lib, name, None)) for name, value in items
                  if getattr(lib, name, None) != value]
    assert not mismatched, mismatched
    consts = lib.gk_contract_constants()
    assert consts.leaky_slope == contract.LEAKY_SLOPE
    assert consts.golden == contract.GOLDEN and consts.layer_mix == contract.LAYER_MIX
