export FM4_CACHE_DIR=/tmp/fm4cache; export PYTHONPATH=$PWD:$PYTHONPATH
nvidia-smi --query-gpu=name,uuid --format=csv,noheader
patch -p1 -s < scratch/bytes_old_knob.patch && echo patched
M=sliding_window,share_question,causal_document,prefix_lm_document,document,random_eviction,global_sliding_window,causal_blockwise,qk_sparse,prefix_lm_causal
timeout 330 python -m bench.fwd_perf --masks $M --variants default,bytes_old --rounds 6 --check --peers none --jobs 8 > $OUT/ab.txt 2>&1; echo rc $?
grep -v Warn $OUT/ab.txt | tail -40
patch -R -p1 -s < scratch/bytes_old_knob.patch && echo unpatched
timeout 240 python -m pytest tests/test_fwd_sm90.py -m gpu -q -x -p no:cacheprovider -k "rest_mask_bytes or fully or sq_longer or writes" > $OUT/tests1.txt 2>&1; echo rc $?
tail -3 $OUT/tests1.txt
