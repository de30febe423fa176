"""The sparsert DSL: what is computed (``W @ X`` and an epilogue) and how (a schedule)."""
from .ir import Program
from .ops import clamp, gelu, relu, sigmoid, silu
from .schedule import Schedule
from .trace import TraceError, trace

__all__ = ["Program", "Schedule", "TraceError", "clamp", "gelu", "relu", "sigmoid", "silu",
           "trace"]
