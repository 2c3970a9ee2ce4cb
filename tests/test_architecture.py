"""The package's shape: an import graph without cycles in which no module imports one of a
higher layer, and modules of a readable size (a longer one says why in its opening comment)."""

import ast
import sys
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "cifar_exp"

# Bottom to top: a module may import from its own layer or a lower one, never a higher one.
# The data flow reads top-down through this list (config -> data -> models -> train ->
# tracking -> runs -> study -> report), with the helpers that everything uses at the bottom.
LAYERS = [
    {"logs", "provenance", "plots", "models", "interrupts", "errors", "stats", "terminal", "ahead"},
    {"schemas"},
    {"config"},
    {"cifar_files"},
    {"data", "stores", "keras_files"},
    {"callbacks", "optimizers"},
    {"train"},
    {"tracking"},
    {"runs"},
    {"registry", "reproduce"},
    {"study"},
    {"findings", "typeset", "pareto"},
    {"render"},
    {"report"},
    {"predict", "dashboard", "model_card"},
    {"gui", "console", "live"},
    {"commands"},
    {"_preload", "__main__", "__init__"},
]
MAX_LINES = 360  # "about 350"


def _unit(module: str) -> str:
    """The layer unit of a module: its top-level name inside cifar_exp (a package counts
    whole: `study.sweep` -> `study`)."""
    return module.split(".")[0]


def _imports() -> dict[str, set[str]]:
    """module (dotted, inside cifar_exp) -> the cifar_exp modules it imports anywhere,
    function-level imports included."""
    graph: dict[str, set[str]] = {}
    for path in SRC.rglob("*.py"):
        rel = path.relative_to(SRC).with_suffix("")
        name = ".".join(rel.parts)
        if name.endswith(".__init__"):
            name = name.removesuffix(".__init__")
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: resolve against this module's package
                    parent = package.split(".") if package else []
                    parent = parent[: len(parent) - node.level + 1]
                    base = ".".join([*parent, base]) if base else ".".join(parent)
                    base = f"cifar_exp.{base}" if base else "cifar_exp"
                targets = [base] + [f"{base}.{a.name}" for a in node.names]
            else:
                continue
            found.update(m for m in map(_resolve, targets) if m)
        found.discard(name)
        graph[name] = found
    return graph


def _resolve(target: str) -> str | None:
    """`cifar_exp.study.sweep.sweep` -> `study.sweep`: the longest prefix that is a module or
    package of cifar_exp (None outside it)."""
    parts = target.split(".")
    if parts[0] != "cifar_exp":
        return None
    for end in range(len(parts), 1, -1):
        rel = Path(*parts[1:end])
        if (SRC / rel).with_suffix(".py").is_file() or (SRC / rel).is_dir():
            return ".".join(parts[1:end])
    return None


def _layer(unit: str) -> int:
    for i, layer in enumerate(LAYERS):
        if unit in layer:
            return i
    raise AssertionError(f"module {unit!r} is in no layer of tests/test_architecture.py")


def test_every_module_has_a_layer():
    for module in _imports():
        _layer(_unit(module) or "__init__")


def test_no_module_imports_a_higher_layer():
    wrong = [
        f"{module} -> {target}"
        for module, targets in _imports().items()
        for target in targets
        if _layer(_unit(target)) > _layer(_unit(module) or "__init__")
    ]
    assert not wrong, "imports against the layering: " + ", ".join(sorted(wrong))


def test_import_graph_has_no_cycles():
    graph = _imports()
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                cycle = [*path[path.index(nxt) :], nxt] if nxt in path else [node, nxt]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if nxt not in state:
                visit(nxt, [*path, nxt])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [start])


@pytest.mark.parametrize("path", sorted(SRC.rglob("*.py")), ids=lambda p: str(p.relative_to(SRC)))
def test_modules_are_a_readable_size(path):
    lines = path.read_text().count("\n")
    if lines > MAX_LINES:
        doc = ast.get_docstring(ast.parse(path.read_text())) or ""
        assert "Longer than" in doc, f"{path.name}: {lines} lines and no reason in its docstring"


def test_the_layering_catches_a_bad_import(tmp_path, monkeypatch):
    """The check itself can fail: a low module importing a high one is reported."""
    fake = tmp_path / "cifar_exp"
    for path in SRC.rglob("*.py"):
        target = fake / path.relative_to(SRC)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(path.read_text())
    (fake / "data.py").write_text(
        (fake / "data.py").read_text() + "\nfrom cifar_exp import report\n"
    )
    monkeypatch.setattr(sys.modules[__name__], "SRC", fake)
    with pytest.raises(AssertionError, match="data -> report"):
        test_no_module_imports_a_higher_layer()
    with pytest.raises(AssertionError, match="import cycle"):
        test_import_graph_has_no_cycles()
