"""Mean over seeds of weights/measure.sh's metrics: one row per coarse set, per-size columns.

    python weights/summarize.py runs/measure 2026 7 11 [--json OUT]

Reads WORKDIR/seedS/NAME.metrics.json (``refine-masks eval --json`` with files coarse, refined,
GT; box-only sets have refined, GT). Prints a Markdown table: mask AP and Boundary AP coarse ->
refined (delta), gap closed, and APs / APm / APl of both metrics as refined - coarse.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SIZES = ("APs", "APm", "APl")


def load(workdir: Path, seeds: list[str]) -> dict[str, list[dict]]:
    """{set name: [metrics of each seed]} for the sets every seed has."""
    per_seed = [{p.name.removesuffix(".metrics.json"): json.loads(p.read_text())
                 for p in sorted((workdir / f"seed{s}").glob("*.metrics.json"))} for s in seeds]
    names = [n for n in per_seed[0] if all(n in d for d in per_seed)]
    return {n: [d[n] for d in per_seed] for n in names}


def summarise(runs: list[dict]) -> dict:
    """Mean over seeds of each (file, metric kind, key); files are named coarse/refined by position."""
    roles = ("coarse", "refined") if len(runs[0]["files"]) == 3 else ("refined",)
    out = {}
    for r, role in enumerate(roles):
        for kind in ("segm", "boundary"):
            for key in ("AP",) + SIZES:
                out[f"{role}.{kind}.{key}"] = float(np.mean([run["files"][r][kind][key] for run in runs]))
    out["seeds"] = len(runs)
    return out


def row(name: str, m: dict) -> str:
    def pair(kind: str) -> str:
        if "coarse.segm.AP" not in m:
            return f"— → **{m[f'refined.{kind}.AP']:.1f}**"
        c, r = m[f"coarse.{kind}.AP"], m[f"refined.{kind}.AP"]
        return f"{c:.1f} → **{r:.1f}** ({r - c:+.1f})"

    def gap(kind: str) -> str:
        c, r = m.get(f"coarse.{kind}.AP"), m[f"refined.{kind}.AP"]
        return "—" if c is None or c >= 100 else f"{100 * (r - c) / (100 - c):.0f} %"

    def sizes(kind: str) -> str:
        if "coarse.segm.AP" not in m:
            return " / ".join(f"{m[f'refined.{kind}.{s}']:.1f}" for s in SIZES)
        return " / ".join(f"{m[f'refined.{kind}.{s}'] - m[f'coarse.{kind}.{s}']:+.1f}" for s in SIZES)

    return (f"| {name} | {pair('segm')} | {pair('boundary')} | {gap('segm')} / {gap('boundary')} | "
            f"{sizes('segm')} | {sizes('boundary')} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("workdir", type=Path)
    parser.add_argument("seeds", nargs="+")
    parser.add_argument("--json", type=Path, help="Also write the means as JSON.")
    args = parser.parse_args()
    sets = {name: summarise(runs) for name, runs in load(args.workdir, args.seeds).items()}
    print(f"mean over seeds {', '.join(args.seeds)}")
    print("| coarse set | mask AP coarse → refined | Boundary AP coarse → refined | gap closed (mask / boundary) "
          "| Δ mask APs / APm / APl | Δ Boundary APs / APm / APl |")
    print("|---|---|---|---|---|---|")
    for name, m in sets.items():
        print(row(name, m))
    if args.json:
        args.json.write_text(json.dumps(sets, indent=1))


if __name__ == "__main__":
    main()
