"""The package's layers import only downward, and no module imports itself in a circle.

Every import of the package, also those inside functions, is read from the source. A module
may import modules of its own layer or of lower layers (see docs/architecture.md).
"""

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "src" / "hmfss"

# lowest first; a name is a module or a sub-package of hmfss
LAYERS = [
    {"errors", "atomic", "inputs", "capability"},
    {"weights", "skip_init", "meta"},
    {"backbones"},
    {"masking", "correlation", "logits"},
    {"fast"},
    {"heads"},
    {"model", "sizes"},
    {"checkpoint", "multiclass"},
    {"data"},
    {"evaluation"},
    {"training"},
    {"demo", "study"},
    {"app"},
    {"cli"},
    {"__init__", "__main__"},
]


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" and len(parts) > 1 else parts)


def imports(path: Path) -> set[str]:
    """Absolute names of the hmfss modules ``path`` imports, anywhere in the file."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {a.name for a in node.names if a.name.split(".")[0] == "hmfss"}
        elif isinstance(node, ast.ImportFrom):
            assert node.level == 0, f"{path}: use absolute imports (from hmfss.x import ...)"
            if node.module and node.module.split(".")[0] == "hmfss":
                found.add(node.module)
                found |= {f"{node.module}.{a.name}" for a in node.names
                          if (PACKAGE.parent / node.module.replace(".", "/") / a.name).exists()
                          or (PACKAGE.parent / f"{node.module.replace('.', '/')}/{a.name}.py").exists()}
    return found


def layer_of(module: str) -> int:
    parts = module.split(".")
    top = parts[1] if len(parts) > 1 else "__init__"
    for index, names in enumerate(LAYERS):
        if top in names:
            return index
    raise AssertionError(f"{module} belongs to no layer: add it to LAYERS and docs/architecture.md")


GRAPH = {module_name(p): imports(p) for p in PACKAGE.rglob("*.py")}


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_go_down(module):
    upward = [m for m in GRAPH[module] if m != "hmfss" and layer_of(m) > layer_of(module)]
    assert not upward, f"{module} imports higher layers: {upward}"


def test_no_import_cycle():
    def resolve(name):  # "hmfss.heads" -> the package's __init__ module
        return name if name in GRAPH else None

    state: dict[str, int] = {}

    def visit(node, stack):
        state[node] = 1
        for nxt in filter(None, map(resolve, GRAPH[node])):
            if nxt == node:
                continue
            if state.get(nxt) == 1:
                raise AssertionError(" -> ".join(stack[stack.index(nxt):] + [nxt]))
            if nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = 2

    for start in sorted(GRAPH):
        if start not in state:
            visit(start, [start])


def test_weights_layer_imports_nothing_above_it():
    code = ("import sys, hmfss.weights; bad = [m for m in sys.modules if m.startswith("
            "('hmfss.heads', 'hmfss.training', 'hmfss.model', 'hmfss.backbones'))]; print(bad); sys.exit(bool(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert out.returncode == 0, out.stdout + out.stderr


def test_the_graph_is_read():
    assert {"hmfss.model", "hmfss.weights"} <= GRAPH["hmfss.checkpoint"]
    assert "hmfss.backbones.base" in GRAPH["hmfss.backbones"]
    assert layer_of("hmfss.cli.main") > layer_of("hmfss.training.loop") > layer_of("hmfss.model")


def test_files_and_functions_stay_small():
    """One concept per file: at most 400 lines a source file, 80 a function
    (docs/architecture.md, "Size rules")."""
    too_long = []
    for path in PACKAGE.rglob("*.py"):
        source = path.read_text()
        if source.count("\n") > 400:
            too_long.append(f"{path.name}: {source.count(chr(10))} lines")
        for node in ast.walk(ast.parse(source)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 80:
                too_long.append(f"{path.name}:{node.name}: {node.end_lineno - node.lineno + 1} lines")
    assert not too_long, too_long
