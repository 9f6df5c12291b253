"""The import graph of ``densemnv3/``: every import, those inside functions included, and the
package ``__init__`` each one runs. No cycle, and no import from a lower layer to a higher one."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: The package's layers, lowest first: a module imports from its own layer or lower ones only.
LAYERS = {
    "errors": 0,
    "utils": 0,
    "config": 1,
    "checkpoint": 2,
    "data": 2,
    "evaluation": 2,
    "models": 3,
    "runtimes": 4,
    "load": 5,
    "engine": 6,
    "inference": 6,
    "export": 7,
    "tasks": 8,
    "netadapt": 8,
    "benchmark": 9,
    "cli": 10,
    "__main__": 10,
}

Graph = dict[str, dict[str, tuple[str, int]]]  # module -> imported module -> (file, line)


def module_name(path: Path, root: Path = ROOT) -> str:
    parts = path.relative_to(root).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(root: Path = ROOT, package: str = "densemnv3") -> Graph:
    """Every module of ``package`` under ``root`` -> the package's modules it imports: by an
    import statement anywhere in it, and the packages above each (whose ``__init__`` runs)."""
    paths = {module_name(p, root): p for p in sorted((root / package).rglob("*.py"))}

    def known(name: str) -> str | None:
        while name and name not in paths:
            name = name.rpartition(".")[0]
        return name or None

    graph: Graph = {}
    for module, path in paths.items():
        own = module if path.name == "__init__.py" else module.rpartition(".")[0]
        edges: dict[str, tuple[str, int]] = {}
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = own
                for _ in range(node.level - 1):
                    base = base.rpartition(".")[0]
                source = (
                    (f"{base}.{node.module}" if node.module else base)
                    if node.level
                    else node.module
                )
                names = [f"{source}.{a.name}" for a in node.names]
            else:
                continue
            for name in names:
                target = known(name)
                while target and target != package:
                    ancestor = module == target or module.startswith(target + ".")
                    if not ancestor:  # a package's own modules do not run its __init__ again
                        edges.setdefault(target, (str(path.relative_to(root)), node.lineno))
                    target = target.rpartition(".")[0]
        graph[module] = edges
    return graph


def find_cycle(graph: Graph) -> list[str] | None:
    """One cycle of ``graph`` as the modules along it (the first repeated at the end), or None."""
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(module: str) -> list[str] | None:
        state[module] = 1
        path.append(module)
        for target in graph.get(module, {}):
            if state.get(target) == 1:
                return path[path.index(target) :] + [target]
            if target not in state and (found := visit(target)):
                return found
        state[module] = 2
        path.pop()
        return None

    for module in sorted(graph):
        if module not in state and (found := visit(module)):
            return found
    return None


def layer(module: str) -> int | None:
    parts = module.split(".")
    return LAYERS.get(parts[1]) if len(parts) > 1 else None


def upward_imports(graph: Graph) -> list[str]:
    """Each import from a lower layer to a higher one, as ``file:line imports module``."""
    found = []
    for module, edges in sorted(graph.items()):
        for target, (file, line) in sorted(edges.items()):
            if layer(module) is None:
                continue
            if (layer(target) or 0) > layer(module):
                found.append(
                    f"{file}:{line} (layer {layer(module)}) imports {target} (layer "
                    f"{layer(target)})"
                )
    return found


def describe(cycle: list[str], graph: Graph) -> str:
    return "; ".join(
        f"{graph[a][b][0]}:{graph[a][b][1]} imports {b}" for a, b in zip(cycle, cycle[1:])
    )


def test_every_package_has_a_layer():
    packages = {m.split(".")[1] for m in import_graph() if "." in m}
    assert packages - LAYERS.keys() == set()


def test_no_import_cycle():
    graph = import_graph()
    cycle = find_cycle(graph)
    assert cycle is None, f"import cycle: {describe(cycle, graph)}"


def test_no_import_runs_up_a_layer():
    assert upward_imports(import_graph()) == []


def test_the_registry_and_checkpoint_reading_import_no_model():
    graph = import_graph()
    assert not [t for t in graph["densemnv3.models.registry"] if t.startswith("densemnv3.models")]
    for module in (m for m in graph if m.startswith("densemnv3.checkpoint")):
        assert not [
            t for t in graph[module] if t.startswith(("densemnv3.models", "densemnv3.runtimes"))
        ]


def _tree(tmp_path: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    return tmp_path


def test_the_checks_find_a_cycle_hidden_in_a_function_and_an_upward_import(tmp_path):
    root = _tree(
        tmp_path,
        {
            "densemnv3/__init__.py": "",
            "densemnv3/models/__init__.py": "from .a import f\n",
            "densemnv3/models/a.py": "def f():\n    from densemnv3.runtimes import g\n",
            "densemnv3/runtimes/__init__.py": "from .b import g\n",
            "densemnv3/runtimes/b.py": "from densemnv3.models.a import f\n\ng = f\n",
        },
    )
    graph = import_graph(root)
    cycle = find_cycle(graph)
    assert cycle is not None and {"densemnv3.models.a", "densemnv3.runtimes"} <= set(cycle)
    assert "densemnv3/models/a.py:2 imports densemnv3.runtimes" in describe(cycle, graph)
    # importing densemnv3.models.a runs the package's __init__ too
    assert set(graph["densemnv3.runtimes.b"]) == {"densemnv3.models", "densemnv3.models.a"}
    assert upward_imports(graph) == [
        "densemnv3/models/a.py:2 (layer 3) imports densemnv3.runtimes (layer 4)"
    ]
