#!/usr/bin/env bash
# Reproduces the accuracy tables of weights/README.md with the project's own commands:
# simulated coarse sets -> refine-masks run -> refine-masks eval (coarse | refined | GT), for each
# seed in SEEDS, then weights/summarize.py prints the mean over seeds with per-size rows.
#   [SEEDS="2026 7 11"] [QUICK=1] [RUN_ARGS="--keep-above 1"] bash weights/measure.sh [CHECKPOINT] [WORKDIR]
# QUICK=1 scores the example's perfect, resolution, realistic and polygon sets only (to compare candidates);
# RUN_ARGS are passed to every `refine-masks run`.
set -euo pipefail
cd "$(dirname "$0")/.."
W=${1:-weights/refinemask_effl0.pt}
OUT=${2:-runs/measure}
SEEDS=${SEEDS:-2026 7 11}  # held-out draws of the coarse sets; training validates on seed 1234
measure() {  # dir name gt images-dir mode box-sigma
    local dir=$1 name=$2 gt=$3 images=$4 mode=$5 sigma=$6
    python3 examples/make_predictions.py --gt "$gt" --mode "$mode" --seed "$SEED" --box-sigma "$sigma" \
        --out "$dir/$name.json"
    refine-masks run "$dir/$name.json" "$images" -o "$dir/$name.refined.json" --weights "$W" --images-json "$gt" \
        $QUALITY ${RUN_ARGS:-}
    # Box-only records have no mask to score: that set is scored refined vs GT only.
    local coarse="$dir/$name.json" by=""; [ "$mode" = box ] && coarse=""
    [ -n "$QUALITY" ] && [ "$mode" != box ] && by=--by-quality
    refine-masks eval --gt "$gt" $coarse "$dir/$name.refined.json" "$gt" $by --json "$dir/$name.metrics.json"
}
# --write-quality where the checkpoint has a quality gate, so eval can bin by its estimate.
QUALITY=$(python3 -c "import sys, torch; c = torch.load(sys.argv[1], weights_only=True)['config']; \
print('--write-quality' if c.get('quality_gate') else '')" "$W")
VAL=examples/coco_val
FRUITS=../shared/data/fruits_nuts
COCO_TRAIN=../shared/data/coco_mini_train
for SEED in $SEEDS; do
    dir=$OUT/seed$SEED
    mkdir -p "$dir"
    # perfect: the GT mask on the GT box (a perfect detector); the rest on boxes jittered by 3 %.
    measure "$dir" val_perfect $VAL/instances.json $VAL/images perfect 0
    for mode in resolution realistic polygon box; do
        [ -n "${QUICK:-}" ] && [ $mode = box ] && continue
        measure "$dir" "val_$mode" $VAL/instances.json $VAL/images $mode 0.03
    done
    [ -n "${QUICK:-}" ] && continue
    if [ -d "$FRUITS" ]; then
        measure "$dir" fruits_realistic $FRUITS/trainval.json $FRUITS/images realistic 0.03
    fi
    # Images the weights were trained on (the first 50 of coco_mini_train, fresh simulations):
    # a refiner that gains as much on unseen images as here is limited by its fit, not by the data.
    if [ -d "$COCO_TRAIN" ]; then
        python3 weights/subset_set.py "$COCO_TRAIN/instances.json" "$dir/train50_gt.json" --count 50
        for mode in resolution realistic; do
            measure "$dir" "train50_$mode" "$dir/train50_gt.json" $COCO_TRAIN/images $mode 0.03
        done
    fi
done
python3 weights/summarize.py "$OUT" $SEEDS
