"""OpenVINO in a process that also handles signals: engines made and freed in any order leave the
thread's alternate signal stack mapped, so a signal handled after them (Python runs its handlers
there) does not kill the process. A child process runs the case, so a crash fails one test."""

import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("openvino")
pytest.importorskip("onnx")

SCRIPT = textwrap.dedent("""
    import ctypes, gc, signal, subprocess, sys
    import torch
    from densemnv3.runtimes.engines import OpenVINOEngine

    class Stack(ctypes.Structure):
        _fields_ = [("sp", ctypes.c_void_p), ("flags", ctypes.c_int), ("size", ctypes.c_size_t)]

    def altstack_mapped() -> bool:
        stack = Stack()
        ctypes.CDLL(None).sigaltstack(None, ctypes.byref(stack))
        if stack.flags & 2 or not stack.sp:  # SS_DISABLE: no alternate stack, nothing to check
            return True
        for line in open("/proc/self/maps"):
            low, high = (int(a, 16) for a in line.split()[0].split("-"))
            if low <= stack.sp < high:
                return True
        return False

    path = sys.argv[1]
    torch.onnx.export(
        torch.nn.Conv2d(3, 4, 3).eval(), torch.randn(1, 3, 16, 24), path, dynamo=False
    )
    x = torch.zeros(1, 3, 16, 24).numpy()
    first, second = OpenVINOEngine(path, 1, "fp32"), OpenVINOEngine(path, 1, "fp32")
    first.run(x), second.run(x)
    del first  # freed before the engine made after it
    gc.collect()
    del second
    gc.collect()
    assert altstack_mapped(), "the alternate signal stack points at unmapped memory"
    signal.signal(signal.SIGCHLD, lambda *args: None)  # as torch's DataLoader installs one
    subprocess.run(["true"], check=True)  # its SIGCHLD is handled on the alternate stack
    print("survived")
""")


def test_engines_freed_out_of_order_leave_signals_handled(tmp_path):
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(tmp_path / "conv.onnx")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0 and proc.stdout.strip().endswith("survived"), (
        proc.returncode,
        proc.stderr[-2000:],
    )
