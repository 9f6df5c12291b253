"""The ``--runtime`` values, importable without torch (the tools parse their arguments first)."""

__all__ = ["RUNTIMES"]

#: ``auto`` (a PyTorch checkpoint: torch; an exported file: the fastest installed engine,
#: measured), ``torch``, then the engines of exported files.
RUNTIMES = ("auto", "torch", "onnxruntime", "openvino", "executorch")
