export FM4_CACHE_DIR=/tmp/fm4cache; export PYTHONPATH=$PWD:$PYTHONPATH
nvidia-smi --query-gpu=name,uuid --format=csv,noheader
timeout 280 python -m bench.fwd_perf --warm-cache --jobs 16 > $OUT/warm.txt 2>&1; echo warm rc $?; tail -1 $OUT/warm.txt
timeout 290 python -m pytest tests/test_fwd_sm90.py tests/test_gpu_foundation.py -m gpu -q -p no:cacheprovider > $OUT/tests_fwd_all.txt 2>&1; echo rc $?
tail -4 $OUT/tests_fwd_all.txt
