"""Every command the README and ``docs/*.md`` show exists as written.

Each fenced line that runs ``densemnv3 ...``, ``python tools/X.py ...``, ``python -m densemnv3
...`` or, inside ``torchrun ...``, ``tools/X.py ...`` / ``-m densemnv3 ...`` is parsed by the real
entry point: ``densemnv3.cli.main`` (which refuses an unknown command) or the ``main`` that
``tools/X.py`` imports, stopped the moment its argument parser has accepted the arguments (an
unknown flag, a missing required one or a bad choice is argparse's exit 2). Where the tool
parses in a module-level ``parse_args`` (with checks of its own after argparse), that function is
run whole. A config the command names (or, without one, the shipped config whose ``work_dirs/``
checkpoint it reads) is then loaded with the command's ``--set`` options, which checks the file
and every key. Nothing trains, evaluates or reads data: placeholders such as ``NODE0_HOST`` or
``/path/to/cityscapes`` pass. A ``torchrun`` line's own options go through torchrun's parser;
``bash`` lines must name a script that exists.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import importlib.util
import io
import re
import shlex
import sys
from pathlib import Path

import pytest

from densemnv3.config import load_config, shipped_configs
from densemnv3.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
#: The Quick start's two commands; ``.ci/run`` and CI run the second one's install and tests.
QUICK_START = (
    "pip install torch==2.14.1 torchvision==0.29.1 && pip install -e . && "
    "python tools/train_seg.py configs/lraspp_synthetic.py",
    "pip install torch==2.14.1 torchvision==0.29.1 && "
    'pip install -e ".[dev,export,openvino,executorch]" && '
    "python -m pytest -q -n auto --dist loadfile",
)


class Parsed(Exception):
    """Raised the moment a tool's arguments are parsed: the tool goes no further."""

    def __init__(self, namespace: argparse.Namespace) -> None:
        super().__init__("parsed")
        self.namespace = namespace


def fenced_lines(text: str) -> list[str]:
    """The lines of every fenced block, backslash continuations joined."""
    lines = []
    for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M):
        lines += [line.strip() for line in block.replace("\\\n", " ").splitlines()]
    return lines


def invocation(segment: str) -> tuple[str, list[str]] | None:
    """``("densemnv3", argv)``, ``("tools/X.py", argv)``, ``("bash", [script])`` for a shell
    segment that runs one, else None."""
    try:
        words = shlex.split(segment)
    except ValueError:
        return None
    if not words:
        return None
    if words[0] == "densemnv3":
        return "densemnv3", words[1:]
    if words[:3] == ["python", "-m", "densemnv3"]:
        return "densemnv3", words[3:]
    if words[0] == "python" and len(words) > 1 and words[1].startswith("tools/"):
        return words[1], words[2:]
    if words[0] == "torchrun":
        for i, word in enumerate(words):
            if word.startswith("tools/") and word.endswith(".py"):
                return word, words[i + 1 :]
            if word == "-m" and words[i + 1 : i + 2] == ["densemnv3"]:
                return "densemnv3", words[i + 2 :]
    if words[0] == "bash" and len(words) > 1:
        return "bash", words[1:2]
    return None


def doc_commands() -> list[tuple[str, str]]:
    """(page, command) for every tool invocation in a fenced block of the README and docs/."""
    found = []
    for page in PAGES:
        for line in fenced_lines(page.read_text()):
            if line.startswith("#"):
                continue
            for segment in re.split(r"\s(?:&&|\|\||;|\|)\s", line):
                if invocation(segment) is not None:
                    found.append((str(page.relative_to(ROOT)), segment.strip()))
    return found


def _entry(program: str, argv: list[str]):
    """(module whose parser reads argv, the call that runs the command) for an invocation."""
    if program == "densemnv3":
        import densemnv3.cli as cli

        name = argv[0] if argv else ""
        if name in cli.COMMANDS and cli.COMMANDS[name][0]:
            module = importlib.import_module(f"densemnv3.cli.{cli.COMMANDS[name][0]}")
        else:  # --help, --version, configs, or an unknown command the dispatcher refuses
            module = cli
        return module, lambda: cli.main(argv)
    path = ROOT / program
    if not path.is_file():
        raise AssertionError(f"{program}: no such tool")
    spec = importlib.util.spec_from_file_location(f"_docs_tool_{path.stem}", path)
    tool = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tool)  # the launcher's own `from densemnv3.cli.X import main`
    return importlib.import_module(tool.main.__module__), lambda: tool.main(argv)


def _config_to_load(namespace: argparse.Namespace) -> str | None:
    """The config the command runs with: the one it names, else the shipped config whose
    ``work_dirs/NAME/`` checkpoint it reads (that checkpoint records it); None for a
    placeholder (``CONFIG``, ``~/...``) or a command without one."""
    config = getattr(namespace, "config", None)
    if config is not None:
        return None if config.isupper() or config.startswith("~") else config
    weights = str(getattr(namespace, "weights", "") or "")
    found = re.match(r"work_dirs/(\w+)/", weights)
    if found and found.group(1) in shipped_configs():
        return found.group(1)
    return None


def check_command(command: str) -> None:
    """Raise AssertionError unless ``command`` (one shell segment) parses as its tool reads it
    and its config and ``--set`` keys load."""
    found = invocation(command)
    if found is None:
        raise AssertionError(f"{command!r}: not a densemnv3 or tools/ command")
    program, argv = found
    if command.startswith("torchrun "):  # torchrun's own options, by torchrun's parser
        from torch.distributed.run import get_args_parser

        err = io.StringIO()
        try:
            with contextlib.redirect_stderr(err):
                get_args_parser().parse_args(shlex.split(command)[1:])
        except SystemExit:
            raise AssertionError(f"{command!r}: torchrun: {err.getvalue()}") from None
    if program == "bash":
        if not (ROOT / argv[0]).is_file():
            raise AssertionError(f"{command!r}: {argv[0]} does not exist")
        return
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch, contextlib.redirect_stdout(out):
        with contextlib.redirect_stderr(err):
            patch.setattr(sys, "argv", [program, *argv])  # `densemnv3 X` renames sys.argv[0]
            patch.setattr(sys, "path", list(sys.path))  # each launcher prepends the clone
            module, run = _entry(program, argv)
            own_parse = getattr(module, "parse_args", None)
            if callable(own_parse):  # the tool's parse_args, its own checks included

                def stop(*args, **kwargs):
                    raise Parsed(own_parse(*args, **kwargs))

                patch.setattr(module, "parse_args", stop)
            else:
                parse = argparse.ArgumentParser.parse_args

                def stop(self, *args, **kwargs):
                    raise Parsed(parse(self, *args, **kwargs))

                patch.setattr(argparse.ArgumentParser, "parse_args", stop)
            try:
                code = run()
            except Parsed as parsed:
                namespace = parsed.namespace
            except SystemExit as exit_:  # argparse: exit 2 on an error, 0 after --help
                if exit_.code not in (0, None):
                    message = f"{command!r}: exit {exit_.code}\n{err.getvalue()}"
                    raise AssertionError(message) from None
                return
            except UserError as error:
                raise AssertionError(f"{command!r}: {error}") from None
            else:  # ran without a parser: densemnv3 --help, --version, configs
                if code not in (0, None):
                    raise AssertionError(f"{command!r}: exit {code}\n{err.getvalue()}")
                return
    config = _config_to_load(namespace)
    if config is None:
        return
    try:
        load_config(config, getattr(namespace, "overrides", None) or ())
    except UserError as error:
        raise AssertionError(f"{command!r}: {error}") from None


COMMANDS = doc_commands()


def test_the_pages_show_commands():
    pages = {page for page, _ in COMMANDS}
    assert "README.md" in pages and len(pages) >= 8, pages
    assert len(COMMANDS) >= 40, len(COMMANDS)


@pytest.mark.parametrize(("page", "command"), COMMANDS, ids=[f"{p}:{c}" for p, c in COMMANDS])
def test_doc_command_parses(page, command, monkeypatch):
    monkeypatch.chdir(ROOT)  # the pages' paths are the clone's
    check_command(command)


def test_a_flag_command_config_or_key_that_does_not_exist_fails(monkeypatch):
    monkeypatch.chdir(ROOT)
    check_command("densemnv3 train lraspp_synthetic --work-dir /tmp/run")  # the real ones pass
    made_up = [
        "densemnv3 train lraspp_synthetic --made-up-flag",
        "python tools/eval_seg.py --weights work_dirs/lraspp_synthetic/best.pt --made-up-flag",
        "python tools/make_synthetic.py --out /tmp/s --made-up-flag 3",
        "python tools/demo_video.py --weights best.pt --source 0 --max-frames 0",  # its own check
        "python tools/export.py --weights best.pt --out m.onnx",  # --format is required
        "densemnv3 made-up-command --weights best.pt",
        "python tools/made_up_tool.py configs/lraspp_synthetic.py",
        "python tools/train_seg.py configs/made_up.py",
        "python tools/train_seg.py configs/lraspp_synthetic.py --set optim.made_up=1",
        "python tools/eval_seg.py --weights work_dirs/lraspp_synthetic/best.pt --set "
        "eval.mod=slide",
        "bash tools/made_up.sh",
        "torchrun --made-up-flag 2 tools/train_seg.py configs/lraspp_synthetic.py",
    ]
    for command in made_up:
        with pytest.raises(AssertionError):
            check_command(command)


def test_torchrun_lines_check_the_tool_they_start():
    line = (
        "torchrun --nnodes 2 --nproc-per-node 8 --rdzv-backend c10d --rdzv-endpoint "
        "NODE0_HOST:29400 --rdzv-id x tools/train_seg.py configs/lraspp_cityscapes.py --set a=1"
    )
    assert invocation(line) == (
        "tools/train_seg.py",
        ["configs/lraspp_cityscapes.py", "--set", "a=1"],
    )
    assert invocation("torchrun --nproc_per_node=4 -m densemnv3 train X") == (
        "densemnv3",
        ["train", "X"],
    )


def test_readme_keeps_the_quick_start_commands_ci_runs():
    readme = fenced_lines((ROOT / "README.md").read_text())
    for command in QUICK_START:
        assert command in readme, command
    ci = (ROOT / ".ci" / "run").read_text()
    assert 'pip install -q -e ".[dev,export,openvino,executorch]"' in ci
    assert "pytest -q -n auto --dist loadfile" in ci
