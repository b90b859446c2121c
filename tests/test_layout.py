"""The package's layout: every module imports, and no two modules import each other, directly or
through others (imports inside functions count too: they still tie the modules together)."""

import ast
import importlib
import pkgutil
from pathlib import Path

import helpers

PACKAGE = Path(helpers.__file__).parent


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imported_modules(path: Path, known: set) -> set:
    """The package's modules that ``path`` imports, anywhere in it."""
    name = module_name(path)
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name in known}
        elif isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            target = f"{base}.{node.module}" if node.level and node.module else (base if node.level else node.module)
            for alias in node.names:
                if f"{target}.{alias.name}" in known:
                    found.add(f"{target}.{alias.name}")  # from . import module
                elif target in known:
                    found.add(target)
    return found - {name}


def import_graph() -> dict:
    paths = sorted(PACKAGE.rglob("*.py"))
    known = {module_name(p) for p in paths}
    return {module_name(p): imported_modules(p, known) for p in paths}


def find_cycle(graph: dict) -> list | None:
    """One cycle of the graph as a list of modules (first == last), or None. Package faces
    (``__init__``) re-export their modules, so edges into a package are followed to its modules."""
    state, stack = {}, []

    def visit(node):
        state[node] = "open"
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        state[node] = "done"
        stack.pop()
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_every_module_imports():
    for info in pkgutil.walk_packages(helpers.__path__, "helpers."):
        importlib.import_module(info.name)


def test_no_import_cycles():
    graph = import_graph()
    # helpers/__init__ reaches into the stages for compress/load_compressed: the package face, not a module
    graph = {k: v - {"helpers"} for k, v in graph.items()}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_the_package_is_grouped_by_stage():
    for folder in ("prune", "quantize", "coding", "runtime", "pipeline"):
        assert (PACKAGE / folder / "__init__.py").is_file(), folder
    assert len(list(PACKAGE.glob("*.py"))) <= 14, "the top level holds the commands and shared basics only"
