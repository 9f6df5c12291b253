"""keep_freed_memory: a freed large tensor's pages serve the next one, without page faults."""

import os
import platform
import subprocess
import sys

import pytest

from densemnv3.utils.memory import ENV

# Allocates and fills a 64 MB tensor over and over and prints whether the setting took and the
# page faults of the last fill (a fresh mapping faults once per 4 KB page: 16384). The heap takes
# a few rounds to settle (glibc bins the freed blocks), then each block is reused.
SCRIPT = """
import resource, torch
from densemnv3.utils.memory import keep_freed_memory
kept = keep_freed_memory()
for _ in range(12):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(16 << 20)
print(kept, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

glibc = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)


def _run(value: str | None) -> tuple[str, int]:
    env = {k: v for k, v in os.environ.items() if k != ENV}
    if value is not None:
        env[ENV] = value
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=env, capture_output=True, text=True, check=True
    )
    kept, faults = out.stdout.split()
    return kept, int(faults)


@glibc
def test_a_freed_tensor_serves_the_next_without_page_faults():
    kept, faults = _run(None)
    assert kept == "True"
    assert faults < 1000


@glibc
def test_turned_off_each_large_tensor_is_mapped_afresh():
    kept, faults = _run("0")
    assert kept == "False"
    assert faults > 10000


def test_the_tools_keep_freed_memory(monkeypatch):
    from densemnv3.cli import entry as cli

    calls = []
    monkeypatch.setattr(cli, "keep_freed_memory", lambda: calls.append(1))
    with pytest.raises(SystemExit) as exit_:
        cli.run_main(lambda: 0)
    assert exit_.value.code == 0 and calls == [1]
