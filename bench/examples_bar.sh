#!/bin/bash
# The issue's bar on examples/coco_val with the shipped weights.
set -u
cd /work/wt18
P=examples/coco_val/predictions.json; I=examples/coco_val/images; D=/tmp/bar18
rm -f $D/*.json $D/*.journal
export PYTHONPATH=/work/wt18
( cd /tmp/orig18 && PYTHONPATH=/tmp/orig18 /usr/bin/time -f "orig: %e s %M KiB" python -m refine_cli run /work/wt18/$P /work/wt18/$I -o $D/orig.json --device cpu --weights /work/wt18/weights/refinemask_effl0.pt ) 2>&1 | tail -1
/usr/bin/time -f "new: %e s %M KiB" python -m refine_cli run $P $I -o $D/plain.json --device cpu 2>&1 | tail -1
cmp $D/orig.json $D/plain.json && echo "plain == orig bytes"
python -m refine_cli run $P $I -o $D/resumed.json --device cpu > $D/int.log 2>&1 &
pid=$!
until [ -f $D/resumed.json.journal ] && [ "$(grep -c '"image"' $D/resumed.json.journal)" -ge 8 ]; do sleep 0.2; done
kill -TERM $pid; wait $pid; echo "SIGTERM exit: $? after $(grep -c '"image"' $D/resumed.json.journal) images"; tail -1 $D/int.log
python -m refine_cli run $P $I -o $D/resumed.json --device cpu 2>&1 | grep -o "error.*" | head -1
python -m refine_cli run $P $I -o $D/resumed.json --device cpu --resume > /dev/null 2>&1; echo "resume exit $?"
cmp $D/plain.json $D/resumed.json && echo "resumed == plain bytes"
for k in 1 2 3; do python -m refine_cli run $P $I -o $D/part$k.json --device cpu --shard $k/3 > /dev/null 2>&1 || echo "shard $k failed"; done
python -m refine_cli merge $P $D/part1.json $D/part2.json $D/part3.json -o $D/merged.json
cmp $D/plain.json $D/merged.json && echo "merged == plain bytes"
