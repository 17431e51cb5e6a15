#!/usr/bin/env bash
# Can this model reproduce COCO's hand-drawn boundaries at the bar's precision on images it has seen?
# Trains on 12 coco_mini_train images (realistic masks only) and validates on the same 12 images
# (fresh seed-1234 simulations), so validation measures the fit, not generalisation. Then scores
# the starting and the kept weights on that simulation with `eval` (per object size too).
#   [INIT=CKPT] [STEPS=600] [TRAIN_ARGS="--train-backbone-from 2"] bash weights/memorise.sh [OUT_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/memorise}
INIT=${INIT:-weights/refinemask_effl0.pt}
STEPS=${STEPS:-600}
SRC=../shared/data/coco_mini_train
SET=$OUT/set
mkdir -p "$SET"
ln -sfn "$(cd "$SRC" && pwd)/images" "$SET/images"
# The first 12 images in the set's list with 4 to 15 non-crowd masks (85 instances).
python3 weights/subset_set.py "$SRC/instances.json" "$SET/instances.json" --count 12 --masks 4-15
refine-masks train --data "$SET" --val "$SET" --out "$OUT/fit.pt" --init "$INIT" --epochs 1000 \
    --max-steps "$STEPS" --val-every 300 --lr 3e-4 --modes realistic=1 --threads 1 --workers 1 --seed 21 \
    ${TRAIN_ARGS:-}
# The validation's realistic simulation (train validates with seed 1234), refined by both weights.
python3 examples/make_predictions.py --gt "$SET/instances.json" --mode realistic --seed 1234 --out "$OUT/realistic.json"
for name in init fit; do
    w=$INIT; [ $name = fit ] && w=$OUT/fit.pt
    refine-masks run "$OUT/realistic.json" "$SET/images" -o "$OUT/realistic.$name.json" --weights "$w" \
        --images-json "$SET/instances.json"
done
refine-masks eval --gt "$SET/instances.json" "$OUT/realistic.json" "$OUT/realistic.init.json" \
    "$OUT/realistic.fit.json" --json "$OUT/eval.json"
