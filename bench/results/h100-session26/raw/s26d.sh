export FM4_CACHE_DIR=/tmp/fm4cache; export PYTHONPATH=$PWD:$PYTHONPATH
nvidia-smi --query-gpu=name,uuid --format=csv,noheader
timeout 250 python -m pytest tests/test_fwd_sm90.py -m gpu -q -x -p no:cacheprovider -k "rest_mask_bytes or fully or sq_longer or writes" > $OUT/tests_fwd39.txt 2>&1; echo rc $?
tail -3 $OUT/tests_fwd39.txt
timeout 200 python -m pytest tests/test_attention_gpu.py -m gpu -q -x -p no:cacheprovider > $OUT/tests_attn.txt 2>&1; echo rc $?
tail -3 $OUT/tests_attn.txt
for t in racecheck memcheck; do
timeout 100 compute-sanitizer --report-api-errors no --tool $t python tests/gpu_sanitize_case.py --many-tiles --fwd-knobs '{}' --grid 8 > $OUT/san_$t.txt 2>&1; echo "$t rc $?"; tail -2 $OUT/san_$t.txt
done
