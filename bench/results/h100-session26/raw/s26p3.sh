export FM4_CACHE_DIR=/tmp/fm4cache; export PYTHONPATH=$PWD:$PYTHONPATH
export FM4_GIT_COMMIT=98a0bdb
nvidia-smi --query-gpu=name,uuid,temperature.gpu --format=csv,noheader
( timeout 60 python -m bench.fwd_perf --warm-cache --bf16-d128-only --jobs 8 > $OUT/warm.txt 2>&1; timeout 150 python -m bench.bwd_perf --warm-cache --jobs 8 >> $OUT/warm.txt 2>&1 ); tail -2 $OUT/warm.txt
timeout 480 python -m bench --seqlens 8K --directions fwd+bwd --out $OUT/p1fb --no-plots > $OUT/p1fb.log 2>&1; echo rc $?
grep -E "^[a-z_]+ +8K +fwd\+bwd +(fm4|fa4)" $OUT/p1fb.log; grep "wrote" $OUT/p1fb.log
