"""One Markdown table writer for every report (check matrix, CLI tables, bench report)."""

from __future__ import annotations


def table(headers: list[str], rows: list[list[str]], align: bool = True) -> str:
    """A Markdown table. align=True pads every column to its widest cell (for terminals);
    align=False writes the compact form (`|---|` separators, no padding)."""
    headers = [str(h) for h in headers]
    rows = [[str(c) for c in r] for r in rows]
    for r in rows:
        if len(r) != len(headers):
            raise ValueError(f"a row has {len(r)} cells, the header {len(headers)}: {r!r}")
    if not align:
        lines = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
        return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])
    widths = [max([len(h)] + [len(r[i]) for r in rows]) for i, h in enumerate(headers)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep] + [line(r) for r in rows])
