"""The package's imports follow docs/design.md's layout: no cycles, no arrow pointing up, nothing imports the demo.

Order (an arrow may only point down this list):
errors, signals, choices, lazy <- modeling <- hub_cards <- processing <- processing.generation, evaluation <- training <- cli;
``demo`` and ``testing`` (the helpers tests, benchmarks and the demo share) may import everything and no library
module imports them; generation and evaluation do not import each other. Every import counts, also those inside
functions (lazy imports), and so do the modules of the CLI's command table (`langclip.cli.COMMANDS`, flags and run
modules, imported by name with importlib): ``cli`` imports each of them, the demo's included (the one way into the demo).
"""

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "langclip"
LAYERS = {
    "langclip.errors": -1,  # below everything: every layer raises its errors; it imports nothing from langclip
    "langclip.signals": -1,  # the stop request of training and the generation jobs; imports nothing from langclip
    "langclip.lazy": -1,  # PEP 562 name resolution for the packages; imports nothing from langclip
    "langclip.choices": -1,  # the names training flags choose among; imports nothing from langclip
    "langclip.modeling": 0,
    "langclip.flags": 0,  # which train and eval flags apply to what; imports only errors
    "langclip.hub_cards": 1,
    "langclip.processing": 2,
    "langclip.processing.generation": 3,
    "langclip.evaluation": 3,
    "langclip.training": 4,
    "langclip.cli": 5,
    "langclip.demo": 6,
    "langclip.testing": 6,
}
TOP_LAYERS = ("langclip.demo", "langclip.testing")  # they may import everything; no library module imports them


def module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def layer(module: str) -> str | None:
    """The longest LAYERS prefix of ``module``."""
    found = [name for name in LAYERS if module == name or module.startswith(name + ".")]
    return max(found, key=len) if found else None


def imports_of(path: Path) -> set[str]:
    """Absolute names of the langclip modules ``path`` imports (``from x import y`` counts y when y is a module)."""
    module = module_name(path)
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names if alias.name.startswith("langclip"))
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if not target.startswith("langclip"):
                continue
            for alias in node.names:
                candidate = f"{target}.{alias.name}"
                found.add(candidate if candidate in MODULES else target)
    return {name for name in found if name in MODULES}


def command_functions(path: Path) -> dict[str, list[tuple[str, str]]]:
    """Command -> [(module, function) of its flags, (module, function) of its run] from the ``COMMANDS`` table in
    ``path`` (``{"name": ("module:function", "module:function", "help"), ...}``)."""
    for node in ast.parse(path.read_text(encoding="utf-8")).body:
        if isinstance(node, ast.Assign) and any(getattr(target, "id", None) == "COMMANDS" for target in node.targets):
            return {ast.literal_eval(key): [tuple(target.split(":")) for target in ast.literal_eval(value)[:2]]
                    for key, value in zip(node.value.keys, node.value.values)}
    raise AssertionError(f"{path} has no COMMANDS table")


MODULES = {module_name(path): path for path in PACKAGE.rglob("*.py")}
COMMAND_FUNCTIONS = command_functions(PACKAGE / "cli.py")
GRAPH = {name: imports_of(path) for name, path in MODULES.items()}
GRAPH["langclip.cli"] |= {module for targets in COMMAND_FUNCTIONS.values() for module, _ in targets}


def test_command_table_names_modules_with_a_command():
    """Every module of the CLI's table exists and defines (or imports) the flags and run functions that cli calls."""
    for command, targets in COMMAND_FUNCTIONS.items():
        for module, function in targets:
            assert module in MODULES, f"langclip {command}: no module {module}"
            defined = set()
            for node in ast.parse(MODULES[module].read_text(encoding="utf-8")).body:
                if isinstance(node, ast.FunctionDef):
                    defined.add(node.name)
                elif isinstance(node, ast.ImportFrom):
                    defined.update(alias.asname or alias.name for alias in node.names)
            assert function in defined, f"langclip {command}: {module} lacks {function}"


def test_errors_import_nothing_from_langclip():
    """Every layer raises `langclip.errors`; it must stay at the bottom."""
    assert GRAPH["langclip.errors"] == set()


def test_layers_cover_every_module():
    unplaced = [name for name in MODULES if name != "langclip" and layer(name) is None]
    assert not unplaced, f"modules outside the layout: {unplaced}"


@pytest.mark.parametrize("module", sorted(GRAPH))
def test_imports_point_down(module):
    source = layer(module)
    for target in GRAPH[module]:
        target_layer = layer(target)
        if module == "langclip" or target_layer is None or target_layer == source:
            continue
        if target_layer in TOP_LAYERS and source not in TOP_LAYERS:
            if module == "langclip.cli" and target in {module for module, _ in COMMAND_FUNCTIONS["demo"]}:
                continue  # `langclip demo`, through the command table
            pytest.fail(f"{module} imports {target}; only the demo, tests and benchmarks may (and `langclip demo`)")
        assert LAYERS[target_layer] < LAYERS[source] or source in TOP_LAYERS, (
            f"{module} ({source}) imports {target} ({target_layer}), which is not below it in docs/design.md's order"
        )


def test_no_import_cycles():
    """Depth-first search over module-level and lazy imports; a back edge is a cycle."""
    state, stack, cycles = {}, [], []

    def visit(name):
        state[name] = "open"
        stack.append(name)
        for target in sorted(GRAPH[name]):
            if target.startswith(name + ".") or name.startswith(target + ".") and MODULES[target].name == "__init__.py":
                continue  # a package and its own modules
            if state.get(target) == "open":
                cycles.append(stack[stack.index(target):] + [target])
            elif target not in state:
                visit(target)
        stack.pop()
        state[name] = "done"

    for name in sorted(GRAPH):
        if name not in state:
            visit(name)
    assert not cycles, "import cycles:\n" + "\n".join(" -> ".join(cycle) for cycle in cycles)
