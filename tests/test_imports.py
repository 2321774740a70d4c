"""jaxenc's imports point one way, and each import left inside a function says why.

The import graph is read from the source (ast), so the test costs no import: an edge runs from a
module to every jaxenc module its import statements execute at import time (those outside
functions; a ``from jaxenc.a import b`` runs ``jaxenc.a`` and, when ``b`` is a submodule, that
too). A package's own ancestors are left out: they are already being imported when it is.
"""

import ast
from pathlib import Path

import jaxenc

ROOT = Path(jaxenc.__file__).parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted(ROOT.rglob("*.py")):
        parts = list(path.relative_to(ROOT.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _ancestors(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _imports(tree: ast.AST, *, in_function: bool):
    """(node, imported module names) of the import statements inside or outside functions."""
    def walk(node, inside):
        for child in ast.iter_child_nodes(node):
            nested = inside or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import) and inside == in_function:
                yield child, [alias.name for alias in child.names]
            elif isinstance(child, ast.ImportFrom) and inside == in_function and child.module and not child.level:
                yield child, [child.module] + [f"{child.module}.{alias.name}" for alias in child.names]
            else:
                yield from walk(child, nested)

    yield from walk(tree, False)


def _graph() -> dict[str, set[str]]:
    graph = {}
    for name, path in MODULES.items():
        own = set(_ancestors(name))
        edges = set()
        for _, names in _imports(ast.parse(path.read_text()), in_function=False):
            for imported in names:
                edges |= {m for m in _ancestors(imported) if m in MODULES and m not in own}
        graph[name] = edges
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in graph:
        if v not in index:
            visit(v)
    return out


def test_the_graph_reader_finds_a_cycle():
    # The reader itself, on a hand-made graph: a -> b -> c -> a, and d alone.
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []


def test_no_module_level_import_cycle():
    graph = _graph()
    # The stage module reaches the nonlinearity step at module level (the cycle once hidden by
    # imports inside functions is gone, not moved out of sight).
    assert "jaxenc.experiment.nonlinearity" in graph["jaxenc.experiment.stages"]
    assert _cycles(graph) == []


def test_an_import_inside_a_function_says_why():
    # A comment right above the import, or above the run of imports it belongs to.
    silent = []
    for name in sorted(MODULES):
        lines = MODULES[name].read_text().splitlines()
        for node, names in _imports(ast.parse("\n".join(lines)), in_function=True):
            if not any(n == "jaxenc" or n.startswith("jaxenc.") for n in names):
                continue
            row = node.lineno - 2
            while row >= 0 and lines[row].strip().startswith(("from ", "import ")):
                row -= 1
            if row < 0 or not lines[row].strip().startswith("#"):
                silent.append(f"{name}:{node.lineno} ({names[0]})")
    assert silent == [], ("imports inside functions without a comment above saying why (a cycle, an optional "
                          f"or heavy dependency): {silent}")
