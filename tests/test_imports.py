"""The package's modules import each other one way: no cycles, lazy (function-level) imports included."""

import ast
import subprocess
import sys
from pathlib import Path

import loopctr

SRC = Path(loopctr.__file__).parent.parent


def module_names() -> dict[str, Path]:
    names = {}
    for path in (SRC / "loopctr").rglob("*.py"):
        parts = list(path.relative_to(SRC).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        names[".".join(parts)] = path
    return names


def import_graph() -> dict[str, set[str]]:
    """module -> the package modules it names in an import, anywhere in its body (`from pkg import name`
    counts as importing `pkg.name` when that is a module, else `pkg`)."""
    modules = module_names()
    graph = {}
    for name, path in modules.items():
        edges = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                edges.update(a.name for a in node.names if a.name in modules)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    target = f"{node.module}.{a.name}"
                    target = target if target in modules else node.module
                    if target in modules:
                        edges.add(target)
        graph[name] = edges - {name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state, stack = {}, []

    def visit(v):
        state[v] = "open"
        stack.append(v)
        for w in sorted(graph[v]):
            if state.get(w) == "open":
                return stack[stack.index(w):] + [w]
            if w not in state and (cycle := visit(w)):
                return cycle
        state[v] = "done"
        stack.pop()
        return None

    for v in sorted(graph):
        if v not in state and (cycle := visit(v)):
            return cycle
    return None


def test_no_import_cycles():
    graph = import_graph()
    assert {"loopctr.models.base", "loopctr.layers.mlp"} <= graph["loopctr.models.dnn"]  # it sees imports
    cycle = find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle)


def test_a_model_module_imports_first_in_a_fresh_interpreter():
    code = "import loopctr.models.din as m; from loopctr.models import MODELS; assert MODELS['din'] is m.DIN"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=SRC)
