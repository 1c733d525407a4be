"""`gradkern bench --compare OLD.json NEW.json`: step time ratios, cell by cell.

ratio = new median / old median: above 1 the new run is slower. A cell is flagged a
regression when the ratio exceeds 1 + threshold *and* the two runs' spreads do not
overlap (new fastest run slower than old slowest run); a ratio beyond the threshold
inside the noise is marked "noise?".
"""

from __future__ import annotations

import json
from pathlib import Path

from .._markdown import table
from .report import KEY_FIELDS, cell_key, fmt_num, fmt_us


def load(path: str | Path) -> dict:
    data = json.loads(Path(path).read_text())
    if "cells" not in data:
        raise ValueError(f"{path} is not a gradkern bench report (no 'cells')")
    return data


def compare(old: dict, new: dict, threshold: float = 0.10) -> dict:
    olds = {cell_key(c): c for c in old["cells"] if c.get("status") == "ok"}
    news = {cell_key(c): c for c in new["cells"] if c.get("status") == "ok"}
    rows = []
    for key in sorted(set(olds) & set(news), key=str):
        o, n = olds[key], news[key]
        ratio = n["median_us"] / o["median_us"]
        if ratio > 1 + threshold:
            verdict = "REGRESSION" if n["min_us"] > o["max_us"] else "noise?"
        elif ratio < 1 / (1 + threshold):
            verdict = "faster" if n["max_us"] < o["min_us"] else "noise?"
        else:
            verdict = ""
        rows.append({**dict(zip(KEY_FIELDS, key, strict=True)), "old_us": o["median_us"],
                     "new_us": n["median_us"], "ratio": ratio, "verdict": verdict})
    def keys(ks):
        return [dict(zip(KEY_FIELDS, k, strict=True)) for k in sorted(ks, key=str)]

    return {"threshold": threshold, "rows": rows,
            "only_old": keys(set(olds) - set(news)), "only_new": keys(set(news) - set(olds)),
            "regressions": sum(r["verdict"] == "REGRESSION" for r in rows),
            "machine_differs": _machine_differences(old, new)}


def _machine_differences(old: dict, new: dict) -> list[str]:
    out = []
    mo, mn = old.get("machine", {}), new.get("machine", {})
    pairs = (("CPU", ("cpu", "model")), ("BLAS kernel", ("blas", "kernel")),
             ("gradkern commit", ("gradkern", "commit")))
    for label, (a, b) in pairs:
        vo, vn = mo.get(a, {}).get(b), mn.get(a, {}).get(b)
        if vo != vn:
            out.append(f"{label}: {vo} -> {vn}")
    return out


def to_markdown(result: dict, old_name: str, new_name: str) -> str:
    L = [f"# Benchmark comparison: {new_name} against {old_name}", ""]
    L.append(f"ratio = new / old median µs per step (above 1: slower). Flagged REGRESSION when "
             f"above {1 + result['threshold']:.2f} and outside both runs' spread.")
    L.append("")
    for d in result["machine_differs"]:
        L.append(f"- differs between the runs: {d}")
    if result["machine_differs"]:
        L.append("")
    rows = [[str(r[k]) for k in KEY_FIELDS]
            + [fmt_us(r["old_us"]), fmt_us(r["new_us"]), fmt_num(r["ratio"], 3), r["verdict"]]
            for r in result["rows"]]
    L.append(table([*KEY_FIELDS, "old µs", "new µs", "ratio", ""], rows, align=False))
    L.append("")
    n = len(result["rows"])
    L.append(f"{n} cells compared, {result['regressions']} regressions; "
             f"{len(result['only_old'])} only in old, {len(result['only_new'])} only in new.")
    return "\n".join(L) + "\n"


def main(old_path: str, new_path: str, threshold: float, out: str | None,
         fail_on_regression: bool) -> int:
    try:
        old, new = load(old_path), load(new_path)
    except (OSError, ValueError) as exc:
        print(f"gradkern bench --compare: {exc}")
        return 2
    result = compare(old, new, threshold)
    md = to_markdown(result, old_path, new_path)
    print(md)
    if out:
        d = Path(out)
        d.mkdir(parents=True, exist_ok=True)
        (d / "compare.md").write_text(md)
        (d / "compare.json").write_text(json.dumps(result, indent=1))
    return 1 if fail_on_regression and result["regressions"] else 0
