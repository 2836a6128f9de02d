"""The package's modules import one way: no module reaches back to one that imports it."""
import ast
from pathlib import Path

from conftest import ROOT

PACKAGE = ROOT / "charlm"


def imports() -> dict[str, set[str]]:
    """``{module: charlm modules it imports}``, from the source (lazy imports inside functions too)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        package = parts[:-1] if path.name != "__init__.py" else parts[:-1]
        name = ".".join(parts[:-1] if path.name == "__init__.py" else parts)
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[:len(package) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                    found |= {f"{target}.{a.name}" for a in node.names} | {target}
                elif node.module and node.module.startswith("charlm"):
                    found.add(node.module)
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("charlm")}
        modules[name] = found
    return {name: {d for d in deps if d in modules and d != name} for name, deps in modules.items()}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    found, state = [], {}

    def visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph[node]):
            if state.get(nxt) == "open":
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, path + [nxt])
        state[node] = "done"

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])
    return found


def test_the_finder_sees_a_circle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_circles():
    graph = imports()
    assert "charlm.training" in graph and "charlm.splits" in graph["charlm.training"]
    assert cycles(graph) == []


def test_the_data_flows_downward():
    """text -> vocabulary -> ids -> batches -> model -> loss -> checkpoint: the lower steps know
    nothing of training, scoring or the command line."""
    graph = imports()
    upper = {"charlm.training", "charlm.scoring", "charlm.sampling", "charlm.mirror", "charlm.export"}
    for low in ("charlm.vocab", "charlm.splits", "charlm.batches", "charlm.model", "charlm.cells",
                "charlm.optim", "charlm.budget", "charlm.corpora"):
        assert not graph[low] & upper, (low, graph[low] & upper)
