#!/usr/bin/env bash
# The issue-18 bar on examples/coco_val with the shipped weights: a run stopped by SIGTERM and resumed,
# and three shards merged, each byte-identical to one uninterrupted run. With BASELINE=DIR (another
# checkout, e.g. `git worktree add DIR <commit>`) that checkout's output must be the same bytes too.
set -euo pipefail
cd "$(dirname "$0")/.."
export PYTHONPATH=$PWD
P=examples/coco_val/predictions.json I=examples/coco_val/images D=$(mktemp -d)
trap 'rm -rf "$D"' EXIT
run() { python -m refine_cli run "$P" "$I" --device cpu "$@"; }
run -o "$D/plain.json" 2>/dev/null
if [ -n "${BASELINE:-}" ]; then
    (cd "$BASELINE" && PYTHONPATH=$BASELINE python -m refine_cli run "$OLDPWD/$P" "$OLDPWD/$I" --device cpu \
        --weights "$OLDPWD/weights/refinemask_effl0.pt" -o "$D/baseline.json" 2>/dev/null)
    cmp "$D/baseline.json" "$D/plain.json" && echo "plain run == $BASELINE's bytes"
fi
run -o "$D/resumed.json" 2>/dev/null &
pid=$!
until [ -f "$D/resumed.json.journal" ] && [ "$(grep -c '"image"' "$D/resumed.json.journal")" -ge 8 ]; do sleep 0.2; done
kill -TERM "$pid"
status=0; wait "$pid" || status=$?
echo "SIGTERM: exit $status after $(grep -c '"image"' "$D/resumed.json.journal") images"
run -o "$D/resumed.json" --resume 2>/dev/null
cmp "$D/plain.json" "$D/resumed.json" && echo "resumed == plain bytes"
for k in 1 2 3; do run -o "$D/part$k.json" --shard "$k/3" 2>/dev/null; done
python -m refine_cli merge "$P" "$D"/part{3,1,2}.json -o "$D/merged.json"
cmp "$D/plain.json" "$D/merged.json" && echo "3 shards merged == plain bytes"
