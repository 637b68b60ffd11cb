export FM4_CACHE_DIR=/tmp/fm4cache; export PYTHONPATH=$PWD:$PYTHONPATH
export FM4_GIT_COMMIT=98a0bdb
nvidia-smi --query-gpu=name,uuid,temperature.gpu --format=csv,noheader
timeout 100 python -m bench.fwd_perf --warm-cache --bf16-d128-only --jobs 8 > $OUT/warm.txt 2>&1; tail -1 $OUT/warm.txt
timeout 480 python -m bench --seqlens 32K,128K --masks full,causal,sliding_window,causal_document,document,share_question --out $OUT/p2 --no-plots > $OUT/p2.log 2>&1; echo rc $?
grep -E "^[a-z_]+ +(32K|128K) +fwd +(fm4|fa4)" $OUT/p2.log; grep "wrote" $OUT/p2.log
