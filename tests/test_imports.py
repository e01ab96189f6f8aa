"""The package imports one way: no cycle among the modules of python/mridpm.

Every import statement counts, at module level or inside a function (a lazy import that closes a
cycle is still a cycle; it only hides it until run time), except those under `if TYPE_CHECKING:`,
which never run. `from a.b import c` depends on module a.b.c when c is a submodule and on a.b
(its __init__ for a package) otherwise; `import a.b` on a.b. Initialising the parent packages of
an imported module is not an edge: Python does it, but a package's __init__ importing its own
submodules is how packages are built, and a submodule that needs a name from its parent's
__init__ imports the parent by name, which is an edge.
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "python"
PACKAGE = "mridpm"


def module_names(root: Path = ROOT) -> dict[str, Path]:
    """{dotted name: file} of every module and package under root/PACKAGE."""
    names = {}
    for path in sorted((root / PACKAGE).rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or \
        (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.AST) -> list[ast.Import | ast.ImportFrom]:
    """Every import statement in tree, skipping the bodies of `if TYPE_CHECKING:` blocks."""
    found: list[ast.Import | ast.ImportFrom] = []

    def visit(node: ast.AST) -> None:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            found.append(node)
        if isinstance(node, ast.If) and _is_type_checking(node.test):
            for child in node.orelse:
                visit(child)
            return
        for child in ast.iter_child_nodes(node):
            visit(child)

    visit(tree)
    return found


def _bound_names(path: Path) -> set[str] | None:
    """The names a module binds at its top level (through if/try/with blocks, not into functions or
    classes); None when it star-imports (then any name may be bound)."""
    names: set[str] = set()

    def visit(body: list[ast.stmt]) -> bool:
        for node in body:
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                names.add(node.name)
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                for alias in node.names:
                    if alias.name == "*":
                        return False
                    names.add(alias.asname or alias.name.split(".")[0])
            elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.AugAssign)):
                targets = node.targets if isinstance(node, ast.Assign) else [node.target]
                names.update(n.id for t in targets for n in ast.walk(t) if isinstance(n, ast.Name))
            for field in ("body", "orelse", "finalbody", "handlers"):
                block = getattr(node, field, None)
                if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)) or not block:
                    continue
                if not visit([b for h in block for b in h.body] if field == "handlers" else block):
                    return False
        return True

    return names if visit(ast.parse(path.read_text(), str(path)).body) else None


def _owner(name: str, modules: dict[str, Path]) -> str | None:
    """The longest prefix of a dotted name that is one of our modules (None: not ours)."""
    parts = name.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in modules:
            return prefix
    return None


def dependencies(module: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The modules of the package that `module` imports anywhere in its file."""
    is_package = path.name == "__init__.py"
    deps: set[str] = set()
    for node in _imports(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [alias.name for alias in node.names]
        else:
            base = node.module or ""
            if node.level:  # relative: from the module's package, one level up per extra dot
                package = module.split(".") if is_package else module.split(".")[:-1]
                package = package[: len(package) - (node.level - 1)]
                base = ".".join([*package, base] if base else package)
            targets = []
            for alias in node.names:
                full = f"{base}.{alias.name}"
                bound = _bound_names(modules[base]) if modules.get(base, Path()).name == "__init__.py" else None
                if full in modules or bound is None or alias.name in bound or alias.name == "*":
                    targets.append(full if full in modules else base)
                # else: a name the package does not bind is a submodule without Python source (the
                # compiled extension mridpm._C): nothing of ours
        for target in targets:
            owner = _owner(target, modules)
            if owner is not None and owner != module:
                deps.add(owner)
    return deps


def import_graph(root: Path = ROOT) -> dict[str, set[str]]:
    modules = module_names(root)
    return {name: dependencies(name, path, modules) for name, path in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle through each strongly connected component of more than one module (Tarjan's
    algorithm, iterative), each as a path [a, b, ..., a], sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []
    counter = 0
    for start in sorted(graph):
        if start in index:
            continue
        work = [(start, iter(sorted(graph[start])))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph.get(child, ())))))
                elif child in on_stack:
                    low[node] = min(low[node], index[child])
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                component = []
                while True:
                    top = stack.pop()
                    on_stack.discard(top)
                    component.append(top)
                    if top == node:
                        break
                if len(component) > 1:
                    components.append(sorted(component))
    return sorted(_cycle_in(graph, set(c)) for c in components)


def _cycle_in(graph: dict[str, set[str]], component: set[str]) -> list[str]:
    """A shortest cycle through the component's first module (breadth-first within the component)."""
    first = min(component)
    parents: dict[str, str] = {}
    frontier = [first]
    while frontier:
        nxt = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == first:
                    path = [node]
                    while path[-1] != first:
                        path.append(parents[path[-1]])
                    return [*reversed(path), first]
                if child not in parents:
                    parents[child] = node
                    nxt.append(child)
        frontier = nxt
    raise AssertionError(f"{sorted(component)} is not strongly connected")


def test_the_checker_sees_every_kind_of_import(tmp_path: Path) -> None:
    """Module-level, in-function, relative and from-package imports all make edges; TYPE_CHECKING
    imports, external packages and compiled submodules do not; a cycle through a package __init__
    is found."""
    pkg = tmp_path / PACKAGE
    (pkg / "sub").mkdir(parents=True)
    files = {
        "__init__.py": "",
        "a.py": "import torch\nfrom mridpm.sub import b\n",
        "sub/__init__.py": "from mridpm.sub.c import thing\n",
        "sub/b.py": "def f():\n    from ..a import g\n",
        "sub/c.py": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from mridpm import a\n"
                    "from . import d\n",
        "sub/d.py": "import mridpm.sub\nfrom mridpm import _C\n",  # _C: compiled, not an edge to mridpm
    }
    for name, text in files.items():
        (pkg / name).write_text(text)
    graph = import_graph(tmp_path)
    assert graph["mridpm.a"] == {"mridpm.sub.b"}
    assert graph["mridpm.sub.b"] == {"mridpm.a"}
    assert graph["mridpm.sub.c"] == {"mridpm.sub.d"}
    assert graph["mridpm.sub.d"] == {"mridpm.sub"}
    assert cycles(graph) == [["mridpm.a", "mridpm.sub.b", "mridpm.a"],
                             ["mridpm.sub", "mridpm.sub.c", "mridpm.sub.d", "mridpm.sub"]]


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert len(graph) > 50 and graph["mridpm.tasks.reconstruction"]  # the walk found the package
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)
