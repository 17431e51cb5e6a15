#!/usr/bin/env bash
# Can this model reproduce COCO's hand-drawn boundaries at the bar's precision on images it has seen?
# Trains on 12 coco_mini_train images (realistic masks only) and validates on the same 12 images
# (fresh seed-1234 simulations), so validation measures the fit, not generalisation.
#   [INIT=CKPT] [STEPS=600] bash weights/memorise.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/memorise}
INIT=${INIT:-weights/refinemask_effl0.pt}
STEPS=${STEPS:-600}
SRC=../shared/data/coco_mini_train
mkdir -p "$OUT/set"
ln -sfn "$(cd "$SRC" && pwd)/images" "$OUT/set/images"
# The first 12 images in the set's list with 4 to 15 non-crowd masks (85 instances).
python3 weights/subset_set.py "$SRC/instances.json" "$OUT/set/instances.json" --count 12 --masks 4-15
# The starting weights on the same simulations, for comparison.
python3 - "$INIT" "$OUT/set" <<'PY'
import sys
from pathlib import Path
from refine_cli.model.checkpoint import load_checkpoint
from refine_cli.train.loop import val_sets, validate
model, _ = load_checkpoint(sys.argv[1])
root = Path(sys.argv[2])
gt, sets = val_sets(root)
for mode, m in validate(model, gt, sets, root / "images", "cpu").items():
    print(f"{sys.argv[1]} on {mode}: AP {m['coarse']['AP']:.1f}->{m['refined']['AP']:.1f}, "
          f"BAP {m['coarse']['BAP']:.1f}->{m['refined']['BAP']:.1f}")
PY
refine-masks train --data "$OUT/set" --val "$OUT/set" --out "$OUT/fit.pt" --init "$INIT" --epochs 1000 \
    --max-steps "$STEPS" --val-every 300 --lr 3e-4 --modes realistic=1 --threads 1 --workers 1 --seed 21
