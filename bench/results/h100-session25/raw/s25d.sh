export FM4_CACHE_DIR=/tmp/fm4cache; export PYTHONPATH=$PWD:$PYTHONPATH
nvidia-smi --query-gpu=name,uuid --format=csv,noheader
C=causal_document@8192,sliding_window@8192,causal_blockwise@8192,document@8192,random_eviction@8192,share_question@8192,prefix_lm_document@8192,global_sliding_window@8192,qk_sparse@8192,prefix_lm_causal@8192
timeout 300 python -m bench.cycles variants --cases $C --variants default,first_bits,fb_early --jobs 8 --out $OUT/cyc > $OUT/cyc.log 2>&1; echo rc $?
cat $OUT/cyc/cycles.md 2>/dev/null || tail -15 $OUT/cyc.log


