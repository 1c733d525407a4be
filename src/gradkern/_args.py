"""Argument types shared by the command-line parsers."""

from __future__ import annotations

import argparse


def int_list(text: str) -> tuple[int, ...]:
    """'16,64,256' -> (16, 64, 256): positive integers, comma-separated."""
    try:
        values = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers, got {text!r}") from None
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"expected positive integers, got {text!r}")
    return values
