"""The import structure: no cycles among tagjax's modules, inference apart from training, and
`tagjax.data`'s audio decoding without the data sets' libraries.

The graph is read from the source files (`ast`, nothing imported): every `import tagjax...` and
`from tagjax... import ...`, at module level or inside a function, is an edge. Code under
`if __name__ == "__main__":` is left out: it runs only when the file is the program
(`python -m tagjax.train`), never when the module is imported.
"""

import ast
import os
import subprocess
import sys

import pytest

import tagjax

PACKAGE = os.path.dirname(tagjax.__file__)
# The modules that tag, plot, index and search audio: none may reach the training module.
TAGGING_PATH = ["tagjax.tag", "tagjax.results", "tagjax.chunking", "tagjax.plot",
                "tagjax.rundir", "tagjax.similar", "tagjax.index", "tagjax.models"]


def _module_files() -> dict[str, str]:
    modules = {}
    for folder, _, names in os.walk(PACKAGE):
        for name in names:
            if name.endswith(".py"):
                path = os.path.join(folder, name)
                parts = os.path.relpath(path[:-3], os.path.dirname(PACKAGE)).split(os.sep)
                modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return modules


def _is_main_block(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return (isinstance(node, ast.If) and isinstance(test, ast.Compare)
            and isinstance(test.left, ast.Name) and test.left.id == "__name__"
            and any(isinstance(c, ast.Constant) and c.value == "__main__"
                    for c in test.comparators))


def _imported(tree: ast.AST, modules: dict) -> set[str]:
    """The tagjax modules a module's code imports: `from a.b import c` is `a.b.c` when that is a
    module, else `a.b`."""
    found = set()
    stack = [tree]
    while stack:
        node = stack.pop()
        if _is_main_block(node):
            continue
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            for alias in node.names:
                name = f"{node.module}.{alias.name}"
                found.add(name if name in modules else node.module)
        stack.extend(ast.iter_child_nodes(node))
    return {name for name in found if name in modules}


@pytest.fixture(scope="module")
def graph() -> dict[str, set[str]]:
    modules = _module_files()
    edges = {}
    for name, path in modules.items():
        with open(path, encoding="utf-8") as f:
            edges[name] = _imported(ast.parse(f.read(), path), modules) - {name}
    return edges


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (`[a, b, ..., a]`), or None; depth-first search for a back edge."""
    state, path = {}, []  # state: 1 on the current path, 2 done

    def visit(node):
        state[node] = 1
        path.append(node)
        for child in sorted(graph[node]):
            if state.get(child) == 1:
                return [*path[path.index(child):], child]
            if child not in state and (found := visit(child)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def _reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    seen, stack = set(), [start]
    while stack:
        for child in graph[stack.pop()] - seen:
            seen.add(child)
            stack.append(child)
    return seen


def test_the_graph_sees_known_imports(graph):
    # The reader itself: module-level, function-level and `from package import module` edges.
    assert "tagjax.rundir" in graph["tagjax.tag"]  # module level
    assert "tagjax.plot" in graph["tagjax.tag"]  # inside `main`
    assert "tagjax.data.schema" in graph["tagjax.frozen_frontend"]  # from tagjax.data import
    assert "tagjax.cli" in graph["tagjax.__main__"]
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert _cycle({"a": {"b"}, "b": set(), "c": {"a", "b"}}) is None


def test_no_import_cycle_among_tagjax_modules(graph):
    assert _cycle(graph) is None, " -> ".join(_cycle(graph))


@pytest.mark.parametrize("module", TAGGING_PATH)
def test_the_tagging_path_never_imports_the_training_module(graph, module):
    assert module in graph
    assert "tagjax.train" not in _reachable(graph, module)


def test_load_audio_imports_no_data_set_library():
    code = ("import sys, tagjax.data; tagjax.data.load_audio; "
            "print(sorted(m for m in ('tensorflow_datasets', 'pretty_midi', 'midirenderer', "
            "'grain') if m in sys.modules))")
    env = {**os.environ, "PYTHONPATH": os.path.dirname(PACKAGE)}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, env=env).stdout
    assert out.strip() == "[]"
