#!/bin/bash
# The CPU data path before and after the GPU data-path work, side by side: `alexnet bench` of the
# paper network (fp32, batch 32, 2 workers, huge pages off for both) from the source tree in
# /tmp/old18/src (a clone checked out at 57b66d3) and this one, in alternating rounds.
#   git clone . /tmp/old18 && git -C /tmp/old18 checkout 57b66d3
#   alexnet prepare /tmp/bimg /tmp/bimg_packed; bash benchmarks/cpu_before_after.sh
for r in 1 2 3 4; do
  for side in old new; do
    if [ $(( r % 2 )) = 0 ]; then side=$([ $side = old ] && echo new || echo old); fi
    src=$([ $side = old ] && echo /tmp/old18/src || echo "$(cd "$(dirname "$0")/.." && pwd)/src")
    THP_MEM_ALLOC_ENABLE=0 PYTHONPATH=$src "${PYTHON:-python3}" -m alexnet bench --variant paper --images /tmp/bimg \
      --packed /tmp/bimg_packed --precision fp32 --batch-size 32 --no-baseline --workers 2 --json > /tmp/b_$side.json 2>/dev/null
    python3 -c "
import json,sys; d=json.load(open('/tmp/b_$side.json')); print('round $r $side', {f['what']: round(f['images_per_sec'],1) for f in d['figures']})"
  done
done
