"""CuTe DSL kernels of fm4 (device code and their compile/launch wrappers)."""
