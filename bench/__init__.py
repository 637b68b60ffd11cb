"""fm4's benchmark harness: fm4 vs FA4 mask_mod, FlexAttention and FA4 dense on the FlashMask suite.

Run it with ``python -m bench`` (``--help`` for the flags). Modules:

- `bench.cli`: flags, the default/quick/full plans, the run loop and the progress bar.
- `bench.suite`: cases in FlashMask V4's configuration (B = 128K / S, H = 32, D = 128, bf16).
- `bench.peers`: one adapter per implementation (fm4, FA4 mask_mod, FlexAttention, FA4 dense, SDPA).
- `bench.fa4_masks`: the CuTe DSL column-bound mask_mods for FA4.
- `bench.check`: correctness of each implementation's output on a slice, before timing.
- `bench.timing`: CUDA-event timing (median after warm-up by time: the GPU is power-limited).
- `bench.flops`: FLOP counting (by 128x128 block density and by exact unmasked pairs).
- `bench.report`: rows, the printed table, CSV and JSON with the run's metadata.
- `bench.plots`: speedup bars and radar charts.
- `bench.anchors`: comparison of peers' rows with the measured anchors.
- `bench.merge`: one results folder from runs of parts of a plan.
- `bench.summary`: the README's tables and headline numbers from a results.json.
- `bench.cpu_demo`: what runs on a machine without a GPU.
"""
