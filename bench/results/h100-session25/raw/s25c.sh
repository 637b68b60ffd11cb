export FM4_CACHE_DIR=/tmp/fm4cache; export PYTHONPATH=$PWD:$PYTHONPATH
nvidia-smi --query-gpu=name,uuid --format=csv,noheader
C=causal_document@8192,sliding_window@8192,causal_blockwise@8192,document@8192,random_eviction@8192,share_question@8192,prefix_lm_document@8192,global_sliding_window@8192,qk_sparse@8192,prefix_lm_causal@8192
timeout 300 python -m bench.cycles variants --cases $C --variants default,first_bits --jobs 8 --out $OUT/cyc > $OUT/cyc.log 2>&1; echo rc $?
cat $OUT/cyc/cycles.md 2>/dev/null || tail -15 $OUT/cyc.log
for t in racecheck memcheck; do
timeout 100 compute-sanitizer --report-api-errors no --tool $t python tests/gpu_sanitize_case.py --many-tiles --fwd-knobs '{}' --grid 8 > $OUT/san_$t.txt 2>&1; echo "$t rc $?"; tail -2 $OUT/san_$t.txt
done
M=sliding_window,share_question,causal_document,prefix_lm_document,document,random_eviction,global_sliding_window,causal_blockwise,qk_sparse,prefix_lm_causal
timeout 200 python -m bench.fwd_perf --masks $M --variants default,first_bits --rounds 4 --check --peers none --jobs 8 > $OUT/ab.txt 2>&1; echo rc $?
grep -v Warn $OUT/ab.txt | tail -26
