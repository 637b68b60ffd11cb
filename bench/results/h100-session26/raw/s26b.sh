export FM4_CACHE_DIR=/tmp/fm4cache; export PYTHONPATH=$PWD:$PYTHONPATH
nvidia-smi --query-gpu=name,uuid --format=csv,noheader
C=sliding_window@8192,share_question@8192,causal_document@8192,global_sliding_window@8192,prefix_lm_document@8192,causal@8192,document@8192
timeout 400 python -m bench.cycles variants --cases $C --variants default,o_zero_pv --jobs 12 --out $OUT/cyc > $OUT/cyc.log 2>&1; echo rc $?
cat $OUT/cyc/cycles.md 2>/dev/null || tail -15 $OUT/cyc.log
