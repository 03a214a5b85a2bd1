"""The package reads bottom to top as the data flow: no module imports from a layer above its own, and no
imports go round in a cycle. Imports are read from the source (top level and inside functions; those
under `if TYPE_CHECKING:` never run and are left out); nothing is imported to check."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "benchlib"

#: Each module's layer (README, Layout): a module imports from its own layer or below.
LAYERS: dict[str, int] = {
    "benchlib": 1, "benchlib.vocabulary": 1, "benchlib.errors": 1, "benchlib.textfiles": 1,
    "benchlib.interrupts": 1, "benchlib.percentiles": 1,
    "benchlib.labels": 2, "benchlib.params": 2, "benchlib.params_base": 2, "benchlib.params_search": 2, "benchlib.model_spec": 2,
    "benchlib.params_generative": 2, "benchlib.lm_zoo": 2,
    "benchlib.schema": 3, "benchlib.files": 3, "benchlib.ownership": 3, "benchlib.results": 3,
    "benchlib.derive": 4,
    "benchlib.measure": 5,
    "benchlib.present": 6,
    "benchlib.scale": 7,
    "benchlib.cli": 8, "benchlib.__main__": 8,
}


def module_names() -> dict[str, Path]:
    found = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.with_suffix("").relative_to(PACKAGE.parent).parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def layer(module: str) -> int:
    """The layer of a module: its own entry, else its package's (benchlib.measure.zoo -> measure's)."""
    while module not in LAYERS:
        module = module.rpartition(".")[0]
    return LAYERS[module]


def imports(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    class Visitor(ast.NodeVisitor):
        def visit_If(self, node: ast.If) -> None:
            if "TYPE_CHECKING" in ast.unparse(node.test):
                for child in node.orelse:
                    self.visit(child)
                return
            self.generic_visit(node)

        def visit_Import(self, node: ast.Import) -> None:
            found.update(alias.name for alias in node.names)

        def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module or ""
            found.add(module)
            found.update(f"{module}.{alias.name}" for alias in node.names)

    Visitor().visit(ast.parse(path.read_text(encoding="utf-8")))
    # Edges into a package's __init__ are re-exports of its modules (or the version), not a layer of their own.
    return {m for m in found if m in known and m != name and known[m].name != "__init__.py"}


def graph() -> dict[str, set[str]]:
    known = module_names()
    return {name: imports(name, path, known) for name, path in known.items()}


def test_every_module_has_a_layer() -> None:
    for name in module_names():
        layer(name)  # a module outside every layer's package would loop to "" and fail here


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    upward = sorted(f"{name} (layer {layer(name)}) imports {target} (layer {layer(target)})"
                    for name, targets in graph().items() for target in targets if layer(target) > layer(name))
    assert not upward, "\n".join(upward)


def test_no_import_cycle() -> None:
    edges = graph()
    state: dict[str, int] = {}
    stack: list[str] = []
    cycles: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for target in sorted(edges[node]):
            if state.get(target) == 1:
                cycles.append(" -> ".join([*stack[stack.index(target):], target]))
            elif target not in state:
                visit(target)
        stack.pop()
        state[node] = 2

    for node in sorted(edges):
        if node not in state:
            visit(node)
    assert not cycles, "\n".join(cycles)


def test_the_checker_sees_an_upward_import_inside_a_function(tmp_path: Path) -> None:
    source = tmp_path / "m.py"
    source.write_text("def f():\n    from benchlib.cli import main\n\nif TYPE_CHECKING:\n    import benchlib.scale\n")
    assert imports("benchlib.results", source, {"benchlib.cli": Path("cli.py"), "benchlib.scale": Path("s.py")}) == {
        "benchlib.cli"}
