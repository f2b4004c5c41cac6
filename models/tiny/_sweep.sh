#!/bin/bash
# temporary tuning sweep (removed after tuning)
export PYTHONUNBUFFERED=1 OMP_NUM_THREADS=1
run() { i=$1; shift; timeout 545 python3 models/tiny/train.py --no-save "$@" > /tmp/sw_$i.log 2>&1; }
run 1 &
run 2 --base-steps 600 &
run 3 --base-steps 1500 &
run 4 --base-lr 1e-3 &
run 5 --expert-steps 1200 &
run 6 --expert-lr 1e-3 &
run 7 --expert-steps 600 --expert-lr 3e-4 &
run 8 --replay 0.1 &
run 9 --expert-steps 1200 --expert-lr 1e-3 --replay 0.1 &
run 10 --base-steps 600 --expert-steps 1200 --expert-lr 1e-3 &
run 11 --base-steps 1800 &
run 12 --base-steps 600 --base-lr 1e-3 --expert-steps 1200 --expert-lr 1e-3 &
run 13 --expert-steps 1200 --expert-lr 1e-3 --replay 0.2 &
run 14 --base-steps 400 --expert-steps 1300 --expert-lr 1e-3 &
run 15 --base-steps 1500 --expert-steps 1000 --expert-lr 1e-3 --replay 0.05 &
wait
for i in $(seq 1 15); do echo "=== $i"; grep -E "recipe|training took|^base|^expert|^task|^ties|total" /tmp/sw_$i.log; tail -2 /tmp/sw_$i.log; done > $OUT/sweep.log
