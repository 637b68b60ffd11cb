export FM4_CACHE_DIR=/tmp/fm4cache; export PYTHONPATH=$PWD:$PYTHONPATH
nvidia-smi --query-gpu=name,uuid,temperature.gpu,clocks.max.sm --format=csv,noheader
M=causal,prefix_lm_causal,qk_sparse,full,document,random_eviction,causal_blockwise,sliding_window,share_question
timeout 560 python -m bench.fwd_perf --masks $M --variants default,full_asc,o_zero_pv --rounds 5 --check --peers none --jobs 12 --show-rounds > $OUT/ab.txt 2> $OUT/ab_rounds.txt; echo rc $?
grep -v Warn $OUT/ab.txt | tail -40
