"""The package's layering, read off its import statements (no import is executed).

``kernels`` is built in layers, each importing only those below it: ``core`` < ``ops`` <
``dispatch`` < ``autograd`` < the public modules (``functional``, ``fused``, ``aten``); ``sm90`` is
offline tooling that nothing at run time imports. No module imports another's underscore-private
names across packages, and there is no import cycle in ``kernels``, ``cnn`` or ``benchmarks``.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("kernels", "cnn", "benchmarks")

# The layer of each kernels subpackage (a module may import its own layer and those below).
LAYERS = {"core": 0, "ops": 1, "dispatch": 2, "autograd": 3, "api": 4, "sm90": 5}


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path):
    """(imported module, imported names, at module level?) of every import in ``path``, absolute."""
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    tree = ast.parse(path.read_text())
    top_level = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, [], id(node) in top_level
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                module = ".".join(base + ([node.module] if node.module else []))
            else:
                module = node.module
            yield module, [alias.name for alias in node.names], id(node) in top_level


def _sources():
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            yield _module_name(path), path


def _layer(module: str):
    parts = module.split(".")
    if parts[0] != "kernels" or len(parts) == 1:
        return None
    return LAYERS.get(parts[1], LAYERS["api"])


def test_kernels_layers_import_only_downwards():
    wrong = []
    for name, path in _sources():
        own = _layer(name)
        if own is None:
            continue
        for module, _names, _top in _imports(path):
            other = _layer(module)
            if other is not None and other > own:
                wrong.append(f"{name} imports {module}")
    assert not wrong, wrong


def test_no_module_imports_private_names_of_another_package():
    wrong = []
    for name, path in _sources():
        for module, names, _top in _imports(path):
            if not module.split(".")[0] in PACKAGES:
                continue
            same_package = module.rpartition(".")[0] == name.rpartition(".")[0] or module == name.rpartition(".")[0]
            for imported in names:
                if imported.startswith("_") and not same_package:
                    wrong.append(f"{name} imports {module}.{imported}")
    assert not wrong, wrong


def _resolve_module(module: str, modules) -> str:
    while module and module not in modules:
        module = module.rpartition(".")[0]
    return module


def test_no_import_cycles():
    modules = dict(_sources())
    graph = {name: set() for name in modules}
    for name, path in modules.items():
        for module, names, _top in _imports(path):
            if module.split(".")[0] not in PACKAGES:
                continue
            for target in [f"{module}.{n}" for n in names] or [module]:
                resolved = _resolve_module(target, modules)
                if resolved and resolved != name and not name.startswith(resolved + "."):
                    graph[name].add(resolved)
    cycles, state = [], {}

    def visit(node, stack):
        state[node] = "open"
        for nxt in graph[node]:
            if state.get(nxt) == "open":
                cycles.append(stack[stack.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt, stack + [nxt])
        state[node] = "done"

    for node in graph:
        if node not in state:
            visit(node, [node])
    assert not cycles, cycles


@pytest.mark.parametrize("layer", ["core", "ops"])
def test_lower_layers_never_name_the_algorithm_table(layer):
    users = [name for name, path in _sources() if name.startswith(f"kernels.{layer}")
             for module, _names, _top in _imports(path) if module.startswith("kernels.dispatch")]
    assert not users, users
