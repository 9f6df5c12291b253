"""Exporting a trained model for deployment: ONNX (:mod:`.onnx_export`, with SSDLite's
postprocess in the graph, :mod:`.onnx_postprocess`), ExecuTorch programs for phones
(:mod:`.pte`), int8 quantization (:mod:`.quantize`), and the check that every exported file
computes what the PyTorch model does (:mod:`.check`). The exported files run in
:mod:`densemnv3.runtimes`."""
