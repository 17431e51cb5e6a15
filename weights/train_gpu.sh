#!/usr/bin/env bash
# The GPU recipe: two runs from the shipped weights with the whole backbone training (at a quarter
# of the others' rate), sized to a time budget. Run from the repository root on the GPU machine,
# after packing the training sets here (they must fit the 64 MiB a device call carries):
#
#   python weights/pack_data.py .gpu/data ../shared/data/coco_mini_train ../shared/data/fruits_nuts \
#       --short-side 544 --quality 80
#   python weights/pack_data.py .gpu/data ../shared/data/extra_natural --short-side 448 --quality 70
#   BUDGET=480 bash weights/train_gpu.sh        # on the GPU machine
#
#   1. the mix (45 % resolution, 45 % realistic, 10 % polygon), lr 3e-4, 3/4 of the steps;
#   2. from 1's best, resolution-heavy (80/10/10) at lr 1e-4, the other 1/4 (as CPU run 8 did).
# Both validate 4 times on examples/coco_val (seed-1234 sets) and keep their best.
#
# Without N1 and N2 the step counts come from a 30-step probe of this machine's step and
# validation time, so that both runs end within BUDGET seconds; the script prints them, and
# N1=... N2=... reruns the same schedule anywhere. Outputs: $OUTDIR/{g1,g2}.{pt,csv}.
set -euo pipefail
DATA=${DATA:-.gpu/data}
OUTDIR=${OUTDIR:-runs/gpu}
DEVICE=${DEVICE:-cuda}
BATCH=${BATCH:-16}
WORKERS=${WORKERS:-12}
BUDGET=${BUDGET:-480}
start=$(date +%s)
mkdir -p "$OUTDIR"
for f in "$DATA"/*/instances.json.gz; do  # pack_data.py gzips the annotations for the trip
    [ -e "${f%.gz}" ] || gunzip -k "$f"
done
train=(python3 -m refine_cli train --data "$DATA/coco_mini_train*4,$DATA/extra_natural,$DATA/fruits_nuts"
       --val examples/coco_val --batch-size "$BATCH" --workers "$WORKERS" --device "$DEVICE" --threads 4
       --epochs 100000 --train-backbone-from 2 --backbone-lr 0.25)

if [ -z "${N1:-}" ] || [ -z "${N2:-}" ]; then
    t0=$(date +%s.%N)
    "${train[@]}" --out "$OUTDIR/probe.pt" --init weights/refinemask_effl0.pt --max-steps 30 --val-every 30 \
        --lr 1e-5 --seed 100
    t1=$(date +%s.%N)
    read -r N1 N2 < <(python3 - "$OUTDIR/probe.csv" "$t0" "$t1" "$BUDGET" "$start" <<'EOF'
import csv, sys, time
rows = {int(r["step"]): float(r["seconds"]) for r in csv.DictReader(open(sys.argv[1]))}
t0, t1, budget, start = (float(a) for a in sys.argv[2:])
step = (rows[29] - rows[9]) / 20  # steady-state seconds per step
val = rows[30] - rows[29] - step  # one validation
setup = (t1 - t0) - rows[30]  # start-up of one run (imports, data, model)
left = budget - (time.time() - start)
n = int(0.9 * (left - 2 * setup - 8 * val) / step)  # 4 validations per run; 10 % for epoch restarts
print(max(n * 3 // 4, 8), max(n // 4, 8))
print(f"probe: {step:.3f} s/step, {val:.1f} s/validation, {setup:.1f} s start-up -> N1, N2 = "
      f"{max(n * 3 // 4, 8)}, {max(n // 4, 8)}", file=sys.stderr)
EOF
)
fi
# The weight average spans about a quarter (run 1) or a sixth (run 2) of each run, whatever its length:
# CPU runs 7 and 8 used 0.998 over 1,600 steps and 0.995 over 500.
ema() { python3 -c "print(round(min(max(1 - $1 / $2, 0.99), 0.999), 4))"; }
ema1=$(ema 4 "$N1")
ema2=$(ema 2.5 "$N2")
echo "N1=$N1 N2=$N2 ema $ema1 $ema2 (batch $BATCH)"
left() { echo $(( BUDGET - ($(date +%s) - start) )); }
# A run cut by the budget still leaves its best validated checkpoint.
timeout $(( $(left) * 3 / 4 )) "${train[@]}" --out "$OUTDIR/g1.pt" --init weights/refinemask_effl0.pt \
    --max-steps "$N1" --val-every $(( N1 / 4 )) --lr 3e-4 --modes resolution=0.45,realistic=0.45,polygon=0.1 \
    --ema "$ema1" --seed 11 || echo "run 1 ended: $?"
timeout "$(left)" "${train[@]}" --out "$OUTDIR/g2.pt" --init "$OUTDIR/g1.pt" \
    --max-steps "$N2" --val-every $(( N2 / 4 )) --lr 1e-4 --modes resolution=0.8,realistic=0.1,polygon=0.1 \
    --ema "$ema2" --seed 12 || echo "run 2 ended: $?"
echo "done in $(( $(date +%s) - start )) s"
