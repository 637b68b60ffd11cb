export FM4_CACHE_DIR=/tmp/fm4cache; export PYTHONPATH=$PWD:$PYTHONPATH
nvidia-smi --query-gpu=name,uuid --format=csv,noheader
C=global_sliding_window@8192,random_eviction@8192,causal_blockwise@8192,qk_sparse@8192,prefix_lm_causal@8192,full@8192,sliding_window@8192,global_sliding_window@8192
timeout 200 python -m bench.cycles variants --cases $C --variants default,o_zero_fill --jobs 12 --out $OUT/cyc > $OUT/cyc.log 2>&1; echo rc $?
cat $OUT/cyc/cycles.md 2>/dev/null || tail -15 $OUT/cyc.log
timeout 330 python -m pytest -m gpu -q -x -p no:cacheprovider $(cat scratch/s26_ids.txt) > $OUT/tests_persistent.txt 2>&1; echo rc $?
tail -3 $OUT/tests_persistent.txt
