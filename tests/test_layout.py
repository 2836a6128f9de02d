"""The package's layers import downward only: data -> fast -> config -> nn -> run -> use -> training
-> mirror, each sub-package a stage of the flow (README, "How the code is laid out")."""
import ast

from conftest import ROOT

PACKAGE = ROOT / "charlm"
# lowest first; a module may import its own layer and the ones before it, never one after
LAYERS = ["charlm.errors charlm.runtime", "charlm.data", "charlm.fast", "charlm.config", "charlm.nn",
          "charlm.run", "charlm.use", "charlm.training", "charlm.mirror"]


def imports() -> dict[str, set[str]]:
    """``{module: charlm modules it imports}``, from the source (lazy imports inside functions too)."""
    modules = {}
    for path in PACKAGE.rglob("*.py"):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        package = parts[:-1]
        name = ".".join(parts[:-1] if path.name == "__init__.py" else parts)
        found = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom):
                if node.level:
                    base = package[:len(package) - (node.level - 1)]
                    target = ".".join(base + ([node.module] if node.module else []))
                    found |= {f"{target}.{a.name}" for a in node.names} | {target}
                elif node.module and node.module.startswith("charlm"):
                    found |= {node.module} | {f"{node.module}.{a.name}" for a in node.names}
            elif isinstance(node, ast.Import):
                found |= {a.name for a in node.names if a.name.startswith("charlm")}
        modules[name] = found
    return {name: {d for d in deps if d in modules and d != name} for name, deps in modules.items()}


def layer(module: str) -> int | None:
    for rank, prefixes in enumerate(LAYERS):
        if any(module == p or module.startswith(p + ".") for p in prefixes.split()):
            return rank
    return None


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
    assert "charlm.data.splits" in graph["charlm.training.trainer"]
    assert cycles(graph) == []


def test_every_module_has_a_layer():
    graph = imports()
    assert [m for m in graph if m != "charlm" and layer(m) is None] == []


def test_the_layers_import_downward_only():
    """text -> vocabulary -> ids -> batches -> model -> loss -> checkpoint: the lower layers know
    nothing of training, scoring or the command line."""
    graph = imports()
    upward = sorted((m, d) for m, deps in graph.items() if m != "charlm"
                    for d in deps if d != "charlm" and layer(d) > layer(m))
    assert upward == []


def test_the_checker_sees_an_upward_import():
    assert layer("charlm.nn.model") < layer("charlm.use.scoring")
    assert layer("charlm.data.vocab") < layer("charlm.fast.matmul") < layer("charlm.nn.cells")
