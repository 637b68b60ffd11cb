export FM4_CACHE_DIR=/tmp/fm4cache; export PYTHONPATH=$PWD:$PYTHONPATH
nvidia-smi --query-gpu=name,uuid --format=csv,noheader
patch -p1 -s < scratch/bytes_old_knob.patch && echo patched
C=causal_document@8192,sliding_window@8192,causal_blockwise@8192,document@8192,random_eviction@8192,share_question@8192
timeout 330 python -m bench.cycles variants --cases $C --variants default,bytes_old --jobs 8 --out $OUT/cyc > $OUT/cyc.log 2>&1; echo rc $?
cat $OUT/cyc/cycles.md 2>/dev/null || tail -15 $OUT/cyc.log
timeout 200 python -m bench.fwd_perf --masks causal_document,sliding_window,causal_blockwise --variants default,bytes_old --rounds 8 --check --peers none --jobs 8 --show-rounds > $OUT/ab2.txt 2>&1; echo rc $?
grep -v Warn $OUT/ab2.txt | tail -30
