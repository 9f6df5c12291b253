"""Rules on the source itself: no private torchvision API in the package or the tools, a thin
benchmark tool, and the benchmark package above the layers it measures."""

import ast
import io
import tokenize
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCES = sorted([*(ROOT / "densemnv3").rglob("*.py"), *(ROOT / "tools").rglob("*.py")])
BENCHMARK = sorted((ROOT / "densemnv3" / "benchmark").glob("*.py"))
#: Private torchvision names and modules the benchmark once used (or torchvision's helpers use).
PRIVATE = (
    "torchvision.models._",
    "._utils",
    "_mobilenet_extractor",
    "_is_cn",
    "_NormBase",
    "_mobilenet_v3_conf",
)


def code(source: str) -> str:
    """``source`` with its comments and docstrings blanked: prose may name what the code avoids."""
    docstrings = {
        (node.body[0].lineno, node.body[0].col_offset)
        for node in ast.walk(ast.parse(source))
        if isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef))
        and node.body
        and isinstance(node.body[0], ast.Expr)
        and isinstance(node.body[0].value, ast.Constant)
        and isinstance(node.body[0].value.value, str)
    }
    lines = source.splitlines(keepends=True)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.COMMENT or (
            tok.type == tokenize.STRING and tok.start in docstrings
        ):
            (row, col), (end_row, end_col) = tok.start, tok.end
            for r in range(row, end_row + 1):
                line = lines[r - 1]
                start, stop = (
                    col if r == row else 0,
                    end_col if r == end_row else len(line.rstrip("\n")),
                )
                lines[r - 1] = line[:start] + " " * (stop - start) + line[stop:]
    return "".join(lines)


def private_uses(source: str) -> list[str]:
    """The private torchvision names ``source``'s code uses: the names above anywhere in the code
    (strings included, as in ``getattr(block, "_is_cn")``), and any import of a torchvision module
    or name that starts with an underscore."""
    text = code(source)
    found = [name for name in PRIVATE if name in text]
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("torchvision"):
            names = [*node.module.split("."), *(a.name for a in node.names)]
        elif isinstance(node, ast.Import):
            names = [
                part
                for a in node.names
                if a.name.startswith("torchvision")
                for part in a.name.split(".")
            ]
        else:
            continue
        found += [f"import of {name}" for name in names if name.startswith("_")]
    return found


def test_the_check_finds_private_uses_and_skips_prose():
    assert private_uses("from torchvision.models._utils import IntermediateLayerGetter\n")
    assert private_uses("from torchvision.models.detection.ssdlite import _mobilenet_extractor\n")
    assert private_uses("import torchvision.ops._box_convert\n")
    assert private_uses('ok = [getattr(b, "_is_cn", False) for b in blocks]\n')
    assert private_uses("norm = isinstance(m, torchvision_norm._NormBase)\n")
    prose = '"""Not ``_mobilenet_extractor``."""\n\nx = 1  # nor torchvision.models._utils\n'
    assert private_uses(prose) == []


@pytest.mark.parametrize("path", SOURCES, ids=lambda p: str(p.relative_to(ROOT)))
def test_no_private_torchvision_api(path):
    assert private_uses(path.read_text()) == []


def test_benchmark_tool_is_thin_and_its_package_modules_small():
    assert len((ROOT / "densemnv3" / "cli" / "benchmark.py").read_text().splitlines()) <= 300
    for path in BENCHMARK:
        source = path.read_text()
        assert len(source.splitlines()) <= 400, path.name
        assert ast.get_docstring(ast.parse(source)), f"{path.name} has no module docstring"


def _imports(path: Path) -> list[str]:
    """The modules ``path`` imports, relative imports resolved against its package."""
    package = ".".join(path.relative_to(ROOT).with_suffix("").parts[:-1])
    modules = []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            modules += [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level > 1 else package
            module = (
                f"{base}.{node.module}"
                if node.level and node.module
                else base
                if node.level
                else node.module
            )
            modules += [module, *(f"{module}.{a.name}" for a in node.names)]
    return modules


def test_benchmark_package_sits_above_the_layers_it_measures():
    for path in BENCHMARK:
        assert not [m for m in _imports(path) if m == "tools" or m.startswith("tools.")], path.name
    for path in sorted((ROOT / "densemnv3").rglob("*.py")):
        if not {"benchmark", "cli"} & set(path.relative_to(ROOT).parts):  # cli: the command on top
            assert not [m for m in _imports(path) if m.startswith("densemnv3.benchmark")], path


@pytest.mark.parametrize(
    "path", sorted((ROOT / "densemnv3").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT))
)
def test_modules_stay_small(path):
    assert len(path.read_text().splitlines()) <= 450
