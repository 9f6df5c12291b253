"""Per-device inference defaults: one resolution for the Predictor and the tools."""

import argparse

import pytest
import torch

from densemnv3.cli.arguments import add_inference_arguments, settings_from_args
from densemnv3.errors import UserError
from densemnv3.inference.settings import (
    InferenceSettings,
    inference_defaults,
    parse_variant,
    resolve_inference,
)


def test_defaults_per_device():
    cuda = inference_defaults("cuda")
    assert (cuda.precision, cuda.memory_format, cuda.compile, cuda.cuda_graphs) == (
        "fp16",
        "nchw",
        False,
        False,
    )
    assert cuda.dtype == torch.float16 and cuda.torch_memory_format == torch.contiguous_format
    assert cuda.describe() == "inference: cuda, fp16, NCHW, compile off, cuda-graphs off"
    cpu = inference_defaults("cpu")
    assert (cpu.precision, cpu.memory_format, cpu.compile, cpu.cuda_graphs) == (
        "fp32",
        "channels_last",
        False,
        False,
    )
    assert cpu.describe() == "inference: cpu, fp32, channels_last, compile off, cuda-graphs off"


def test_overrides_replace_only_what_is_given():
    s = resolve_inference("cpu", precision="bf16", channels_last=True, compile=True)
    assert s == InferenceSettings(torch.device("cpu"), "bf16", "channels_last", True, False)
    assert s.describe() == "inference: cpu, bf16, channels_last, compile on, cuda-graphs off"
    assert resolve_inference("cpu", memory_format="channels_last").channels_last
    assert resolve_inference("cpu", channels_last=True) == inference_defaults("cpu")
    assert resolve_inference("cpu", channels_last=False).memory_format == "nchw"


@pytest.mark.parametrize(
    "options, words",
    [
        ({"precision": "fp16"}, "fp16 needs a CUDA device"),
        ({"precision": "int4"}, "fp32, fp16, bf16, int8"),
        (
            {"precision": "int8", "compile": True},
            "int8 .a quantized ONNX file. runs in onnxruntime on the CPU",
        ),
        ({"memory_format": "nhwc"}, "nchw, channels_last"),
        ({"cuda_graphs": True}, "CUDA graphs need a CUDA device"),
        ({"memory_format": "nchw", "channels_last": True}, "contradicts"),
    ],
)
def test_bad_options_on_cpu_are_user_errors(options, words):
    with pytest.raises(UserError, match=words):
        resolve_inference("cpu", **options)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
def test_cuda_without_a_gpu_is_a_user_error():
    with pytest.raises(UserError, match="no CUDA device"):
        resolve_inference("cuda")


def test_int8_is_an_onnxruntime_precision_on_the_cpu():
    int8 = parse_variant("int8", "cpu")
    assert int8.precision == "int8" and int8.dtype == torch.float32  # int8 files take float inputs
    assert int8.describe() == "inference: cpu, int8, onnxruntime"
    onnx = resolve_inference("cpu", precision="int8", runtime="onnxruntime")
    assert onnx.describe() == "inference: cpu, int8, onnxruntime"
    with pytest.raises(UserError, match="an exported file runs in onnxruntime on the CPU"):
        resolve_inference("cpu", cuda_graphs=False, compile=True, runtime="onnxruntime")


def test_compile_modes():
    assert inference_defaults("cuda").compile_mode is None
    assert (
        InferenceSettings(torch.device("cuda"), compile=True).compile_mode
        == "max-autotune-no-cudagraphs"
    )
    both = InferenceSettings(torch.device("cuda"), compile=True, cuda_graphs=True)
    assert both.compile_mode == "max-autotune"


def test_cli_arguments_resolve_to_settings():
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu")
    add_inference_arguments(parser)
    assert settings_from_args(parser.parse_args([])) == inference_defaults("cpu")
    args = parser.parse_args(["--precision", "bf16", "--channels-last", "--compile"])
    assert settings_from_args(args) == InferenceSettings(
        torch.device("cpu"), "bf16", "channels_last", True
    )
    args = parser.parse_args(["--memory-format", "nchw", "--no-compile", "--no-cuda-graphs"])
    assert settings_from_args(args) == InferenceSettings(torch.device("cpu"), memory_format="nchw")


def test_variants_start_from_the_device_defaults():
    assert parse_variant("default", "cpu") == inference_defaults("cpu")
    assert parse_variant("bf16+channels_last+compile", "cpu") == InferenceSettings(
        torch.device("cpu"), "bf16", "channels_last", True
    )
    with pytest.raises(UserError, match="unknown part 'fast'"):
        parse_variant("fp32+fast", "cpu")
    with pytest.raises(UserError, match="CUDA graphs need"):
        parse_variant("fp32+graphs", "cpu")
