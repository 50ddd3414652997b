#!/usr/bin/env bash
# A device check: `tradeoff calibrate --device cuda` against the datasheet, its effect on `tradeoff roofline`,
# and `tradeoff load` on an in-process torch model metered by NVML. Run on the lent GPU from the
# repository root, with pydantic/httptools/uvicorn/altair wheels carried in .whl (see RESULTS.md).
# The load run's PNG chart needs vl-convert-python, which the device image lacks: that step ends
# in ModuleNotFoundError after the run is stored; `report --load` then reads it.
set -x
pip install -q --no-index --find-links .whl --target /tmp/deps pydantic httptools uvicorn altair 2>&1 | tail -1
export PYTHONPATH=$PWD/src:/tmp/deps TRADEOFF_CALIBRATION=/tmp/cal.json
T="python3 -m tradeoff"
D=$(nvidia-smi --query-gpu=name --format=csv,noheader | grep -o "H[0-9]00" | head -1); echo device=$D
nvidia-smi --query-gpu=name,clocks.max.sm,clocks.max.mem,power.limit --format=csv
S='torch:qwen2.5-0.5b?random_weights=1&ctx=1024'
L='torch:llama-3.1-8b?random_weights=1&ctx=1024'
$T profile -m "$S" -m "$L" -t arith --limit 8 --max-tokens 64 --out /tmp/w/p 2>&1 | tail -15
$T report /tmp/w/p --wide --format json > $OUT/report_datasheet.json; $T report /tmp/w/p --wide | tail -8
$T roofline llama-3.1-8b --device $D --input 128 --output 64 | tail -12
time $T calibrate --device cuda --seconds 4; cat /tmp/cal.json; cp /tmp/cal.json $OUT/cal1.json
$T report /tmp/w/p --wide --format json > $OUT/report_calibrated.json; $T report /tmp/w/p --wide | tail -8
$T roofline llama-3.1-8b --device $D --input 128 --output 64 | tail -12
time $T calibrate --device cuda --seconds 4 --no-save 2>&1 | tail -12
$T calibrate --device cuda --seconds 0.1 --no-save 2>&1 | tail -6
$T load -m "$S" -t synthetic:prompt=128,output=64 --profile poisson:5,40 --max-seconds 12 --out /tmp/w/l 2>&1 | tail -25
$T report /tmp/w/l --load 2>&1 | tail -20
$T report /tmp/w/l --load --format json > $OUT/load.json 2>/dev/null
nvidia-smi --query-gpu=name,memory.used --format=csv
