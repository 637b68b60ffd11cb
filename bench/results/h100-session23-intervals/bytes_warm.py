# ruff: noqa
import sys
from bench.fwd_perf import _warm_one, warm_in_processes
from fm4.cute_kernels.fwd_launch import FWD_TEST_KNOBS, fwd_knobs

keys = []
for dt, d in [("BFloat16", 128), ("BFloat16", 256), ("Float16", 64)]:
    for causal, nb in [(True, 1), (True, 2), (False, 2)]:
        for kn in ({}, {"rest_mask": "bytes"}):
            keys.append(((dt, d, causal, nb), fwd_knobs(d, causal, nb, kn)))
for causal, nb in [(True, 0), (False, 0), (True, 1), (True, 2), (False, 2), (False, 4)]:
    for kn in (FWD_TEST_KNOBS["single_tile"], FWD_TEST_KNOBS["bytes"]):
        keys.append((("BFloat16", 128, causal, nb), fwd_knobs(128, causal, nb, kn)))
sys.exit(warm_in_processes(_warm_one, keys, int(sys.argv[1]), "forward"))
