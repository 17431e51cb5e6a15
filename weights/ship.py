"""Store a training checkpoint as the shipped one: fp16 tensors, the recipe in its meta.

    python weights/ship.py runs/best.pt weights/refinemask_effl0.pt --recipe recipe.json

``recipe.json`` holds what ``weights/README.md`` states (commands, data, hardware, wall time);
it is merged into the checkpoint's ``meta`` beside the training run's own (best step, metrics).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from refine_cli.model.checkpoint import load_checkpoint, save_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--recipe", type=Path, required=True, help="JSON object merged into meta")
    args = parser.parse_args()
    model, ckpt = load_checkpoint(args.checkpoint)
    meta = {**ckpt.get("meta", {}), **json.loads(args.recipe.read_text())}
    save_checkpoint(args.out, model, meta=meta, half=True)
    print(f"{args.out}: {args.out.stat().st_size / 2**20:.1f} MiB, meta keys {sorted(meta)}")


if __name__ == "__main__":
    main()
