#!/usr/bin/env bash
# The GPU run G1 of weights/README.md ("What was tried"): the mix, 16 images per step, with the
# whole backbone training at a quarter of the others' rate, from the shipped weights. Run it from
# the repository root on the GPU machine, after packing the training sets here (they must fit the
# 64 MiB a device call carries):
#
#   python weights/pack_data.py .gpu/data ../shared/data/coco_mini_train ../shared/data/fruits_nuts \
#       --short-side 544 --quality 80
#   python weights/pack_data.py .gpu/data ../shared/data/extra_natural --short-side 448 --quality 70
#   bash weights/train_gpu.sh                        # on the GPU machine
#
# On EfficientNet-Lite2 (issue #17; "EfficientNet-Lite2" in weights/README.md), make its start here,
# where the ImageNet weights' package is installed, in fp16 for the trip (10 MB), and pass it as INIT:
#
#   python weights/swap_backbone.py weights/refinemask_effl0.pt .gpu/l2_init.pt --backbone efficientnet_lite2 --half
#   INIT=.gpu/l2_init.pt STEPS=1600 bash weights/train_gpu.sh   # on the GPU machine
#
# Writes $OUTDIR/g1.pt (best by validation on examples/coco_val, seed-1234 sets, 4 times a run),
# g1.csv and g1.last.pt. On one H100 the 468 steps took 2.5 minutes with their validations (1,600
# steps plus 250 of a second run fit in 7.7); CUDA's atomic adds make reruns differ in the last bits.
# That machine had torch 2.11, torchvision 0.26 and no pycocotools (carried as a wheel, installed
# with pip --target and PYTHONPATH); the packed sets (48 MB) and the repository (14 MB) fit one call.
# A call cut by the session's device time returns only what is already under $OUT: copy g1.pt there
# as soon as the run ends.
set -euo pipefail
DATA=${DATA:-.gpu/data}
OUTDIR=${OUTDIR:-runs/gpu}
INIT=${INIT:-weights/refinemask_effl0.pt}
STEPS=${STEPS:-468}
BACKBONE_LR=${BACKBONE_LR:-0.25}
WORKERS=${WORKERS:-12}
mkdir -p "$OUTDIR"
for f in "$DATA"/*/instances.json.gz; do  # pack_data.py gzips the annotations for the trip
    [ -e "${f%.gz}" ] || gunzip -k "$f"
done
# The weight average spans about a quarter of the run, whatever its length (CPU run 7: 0.998 over
# 1,600 steps).
ema=$(python3 -c "print(round(min(max(1 - 4 / $STEPS, 0.99), 0.999), 4))")
python3 -m refine_cli train --data "$DATA/coco_mini_train*4,$DATA/extra_natural,$DATA/fruits_nuts" \
    --val examples/coco_val --out "$OUTDIR/g1.pt" --init "$INIT" --epochs 100000 --max-steps "$STEPS" \
    --val-every $(( STEPS / 4 )) --batch-size 16 --lr 3e-4 --train-backbone-from 2 --backbone-lr "$BACKBONE_LR" \
    --modes resolution=0.45,realistic=0.45,polygon=0.1 --ema "$ema" --seed 11 --device cuda --threads 4 \
    --workers "$WORKERS"
