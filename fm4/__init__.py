"""fm4: FlashMask column-bound masked attention for PyTorch (CuTe DSL kernels for Hopper).

Public surface: `attention`, `flashmask_attention`, `FlashMask`, `fm4.masks` (builders and the
registry), `fm4.reference` (the fp32 reference) and the ops ``torch.ops.fm4.attention`` /
``torch.ops.fm4.attention_bwd``.
"""

from fm4 import masks
from fm4.api import attention, flashmask_attention
from fm4.masks.flashmask import FlashMask
from fm4.reference import attention_ref

__version__ = "0.1.0"

__all__ = ["FlashMask", "attention", "attention_ref", "flashmask_attention", "masks"]
