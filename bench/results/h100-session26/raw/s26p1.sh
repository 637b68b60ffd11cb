export FM4_CACHE_DIR=/tmp/fm4cache; export PYTHONPATH=$PWD:$PYTHONPATH
export FM4_GIT_COMMIT=98a0bdb
nvidia-smi --query-gpu=name,uuid,temperature.gpu --format=csv,noheader
timeout 110 python -m bench.fwd_perf --warm-cache --bf16-d128-only --jobs 8 > $OUT/warm.txt 2>&1; tail -1 $OUT/warm.txt
timeout 470 python -m bench --seqlens 8K --directions fwd --out $OUT/p1fwd --no-plots > $OUT/p1fwd.log 2>&1; echo rc $?
grep -E "^[a-z_]+ +8K +fwd +(fm4|fa4)" $OUT/p1fwd.log; grep "wrote" $OUT/p1fwd.log
