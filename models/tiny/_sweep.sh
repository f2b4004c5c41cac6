#!/bin/bash
# temporary tuning sweep (removed after tuning)
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
run() { i=$1; shift; timeout 200 python3 models/tiny/train.py --no-save --base-only --eval-every 200 --base-steps 1400 "$@" > /tmp/sw_$i.log 2>&1; }
run 1 --len 3,8 --base-lr 1e-3 &
run 2 --len 3,8 --base-lr 2e-3 &
run 3 --len 3,10 --base-lr 1e-3 &
run 4 --len 3,10 --base-lr 2e-3 &
run 5 --len 4,10 --base-lr 1e-3 --base-mix 2,1,1 &
run 6 --len 3,8 --base-lr 1e-3 --base-mix 1,0.5,0.5 &
run 7 --len 3,8 --base-lr 5e-4 &
run 8 --len 3,10 --base-lr 5e-4 &
run 9 --len 3,12 --base-lr 1e-3 &
run 10 --len 5,12 --base-lr 1e-3 &
run 11 --len 3,8 --base-lr 1e-3 --base-mix 1,0.3,0.3 &
run 12 --len 3,10 --base-lr 1e-3 --base-mix 1,0.3,0.3 &
run 13 --len 3,6 --base-lr 1e-3 --base-mix 1,0.2,0.2 &
run 14 --len 3,6 --base-lr 5e-4 &
run 15 --len 4,12 --base-lr 2e-3 --base-mix 1,0.5,0.5 &
wait
for i in $(seq 1 15); do echo "=== $i"; grep -E "recipe|val " /tmp/sw_$i.log | cut -c1-120; tail -1 /tmp/sw_$i.log; done > $OUT/sweep.log
