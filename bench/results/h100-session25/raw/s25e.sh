export FM4_CACHE_DIR=/tmp/fm4cache; export PYTHONPATH=$PWD:$PYTHONPATH
nvidia-smi --query-gpu=name,uuid --format=csv,noheader
git log --oneline -1 2>/dev/null
timeout 100 python -m bench.fwd_perf --warm-cache --bf16-d128-only --jobs 8 > $OUT/warm.txt 2>&1; tail -1 $OUT/warm.txt
for t in racecheck memcheck; do
timeout 100 compute-sanitizer --report-api-errors no --tool $t python tests/gpu_sanitize_case.py --many-tiles --fwd-knobs '{}' --grid 8 > $OUT/san_$t.txt 2>&1; echo "$t rc $?"; tail -2 $OUT/san_$t.txt
done
timeout 330 python -m pytest tests/test_attention_gpu.py -m gpu -q -x -p no:cacheprovider > $OUT/tests_attn.txt 2>&1; echo rc $?
tail -3 $OUT/tests_attn.txt
