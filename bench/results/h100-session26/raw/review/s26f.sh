export FM4_CACHE_DIR=/tmp/fm4cache; export PYTHONPATH=$PWD:$PYTHONPATH
nvidia-smi --query-gpu=name,uuid --format=csv,noheader
timeout 200 python -m bench.fwd_perf --warm-cache --jobs 16 > $OUT/warm.txt 2>&1; echo warm rc $?; tail -1 $OUT/warm.txt
timeout 200 python -m pytest tests/test_fwd_sm90.py tests/test_gpu_foundation.py -m gpu -q -p no:cacheprovider > $OUT/tests_fwd_all.txt 2>&1; echo rc $?
tail -2 $OUT/tests_fwd_all.txt
for t in memcheck racecheck; do
timeout 70 compute-sanitizer --report-api-errors no --tool $t python tests/gpu_sanitize_case.py --head-dim 256 > $OUT/san_d256_$t.txt 2>&1; echo "d256 $t rc $?"; tail -1 $OUT/san_d256_$t.txt
timeout 70 compute-sanitizer --report-api-errors no --tool $t python tests/gpu_sanitize_case.py --many-tiles --fwd-knobs '{"persistent": false}' > $OUT/san_single_$t.txt 2>&1; echo "single $t rc $?"; tail -1 $OUT/san_single_$t.txt
done
