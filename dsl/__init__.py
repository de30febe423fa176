"""The sparsert DSL: what is computed (``W @ X`` and an epilogue) and how (a schedule)."""
from .ir import Program
from .ops import clamp, conv2d, gelu, relu, sigmoid, silu
from .schedule import Schedule
from .trace import TraceError, trace

__all__ = ["Program", "Schedule", "TraceError", "clamp", "conv2d", "gelu", "relu", "sigmoid",
           "silu", "trace"]
