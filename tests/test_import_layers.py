"""The package's import graph follows the layer order declared in lmforge/layers.py.

Read with `ast` from the source files (nothing is imported): every `import` of an lmforge module,
at the top of a file or inside a function, must go to the same layer or a lower one; the top-level
units (modules and packages) must not import each other in a cycle; and a function may import only
the optional or heavy third-party packages the layer table lists, never an lmforge module.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from lmforge.layers import LAYERS, LAZY_IMPORTS

SRC = Path(__file__).resolve().parents[1] / "src" / "lmforge"
LAYER_OF = {unit: index for index, (_, units) in enumerate(LAYERS) for unit in units}

# Cycles between top-level units allowed for now (importer unit, imported unit): none.
ALLOWED_CYCLE_EDGES: set[tuple[str, str]] = set()
# Units whose function-local imports of lmforge modules are tolerated for now: none.
LOCAL_IMPORTS_PENDING: set[str] = set()


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def is_package(name: str) -> bool:
    return (SRC.parent / name.replace(".", "/") / "__init__.py").is_file()


def resolve(importer: str, node: ast.ImportFrom | ast.Import) -> list[str]:
    """Absolute names of what `node` (inside module `importer`) imports: modules, or a package."""
    if isinstance(node, ast.Import):
        return [alias.name for alias in node.names]
    if node.level == 0:
        base = node.module
    else:
        package = importer if is_package(importer) else importer.rpartition(".")[0]
        for _ in range(node.level - 1):
            package = package.rpartition(".")[0]
        base = f"{package}.{node.module}" if node.module else package
    names = []
    for alias in node.names:  # `from pkg import module` imports the module itself
        candidate = f"{base}.{alias.name}"
        is_module = (SRC.parent / (candidate.replace(".", "/") + ".py")).is_file() or is_package(candidate)
        names.append(candidate if is_module else base)
    return names


def unit_of(module: str) -> str:
    """The top-level unit of an lmforge module ("" for the package itself)."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def imports() -> list[tuple[str, str, bool, int]]:
    """(importer, imported, inside a function, line) for every import statement under src/lmforge."""
    found = []
    for path in sorted(SRC.rglob("*.py")):
        importer = module_name(path)
        tree = ast.parse(path.read_text(encoding="utf-8"))
        local = {id(node) for function in ast.walk(tree)
                 if isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef))
                 for node in ast.walk(function) if isinstance(node, (ast.Import, ast.ImportFrom))}
        for node in ast.walk(tree):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                for imported in resolve(importer, node):
                    found.append((importer, imported, id(node) in local, node.lineno))
    return found


ALL = imports()
INTERNAL = [(a, b, local, line) for a, b, local, line in ALL if b == "lmforge" or b.startswith("lmforge.")]


def test_every_unit_has_a_layer():
    units = {unit_of(module_name(path)) for path in SRC.rglob("*.py")}
    assert units - set(LAYER_OF) == set(), "add the new module or package to lmforge/layers.py"


def test_no_module_imports_from_a_higher_layer():
    upward = [f"{a}:{line} imports {b} ({LAYERS[LAYER_OF[unit_of(b)]][0]} is above "
              f"{LAYERS[LAYER_OF[unit_of(a)]][0]})"
              for a, b, _, line in INTERNAL if LAYER_OF[unit_of(b)] > LAYER_OF[unit_of(a)]]
    assert upward == []


def test_top_level_units_import_each_other_without_cycles():
    edges = {(unit_of(a), unit_of(b)) for a, b, _, _ in INTERNAL if unit_of(a) != unit_of(b)}
    cyclic = sorted((a, b) for a, b in edges if (b, a) in edges and (a, b) not in ALLOWED_CYCLE_EDGES)
    assert cyclic == []
    # longer cycles: a depth-first search over the unit graph, minus the allowed edges
    graph: dict[str, set[str]] = {}
    for a, b in edges - ALLOWED_CYCLE_EDGES:
        graph.setdefault(a, set()).add(b)
    state: dict[str, int] = {}

    def visit(unit: str, path: list[str]) -> None:
        state[unit] = 1
        for nxt in sorted(graph.get(unit, ())):
            if state.get(nxt) == 1:
                pytest.fail(f"import cycle: {' -> '.join(path + [unit, nxt])}")
            if nxt not in state:
                visit(nxt, path + [unit])
        state[unit] = 2

    for unit in sorted(graph):
        if unit not in state:
            visit(unit, [])


def test_functions_import_only_optional_heavy_packages():
    local_internal = [f"{a}:{line} imports {b} inside a function" for a, b, local, line in INTERNAL
                      if local and unit_of(a) not in LOCAL_IMPORTS_PENDING]
    assert local_internal == [], "import lmforge modules at the top of the file (the layer order prevents cycles)"
    local_external = sorted({f"{a}:{line} {b}" for a, b, local, line in ALL
                             if local and not (b == "lmforge" or b.startswith("lmforge."))
                             and not any(b == lazy or b.startswith(lazy + ".") for lazy in LAZY_IMPORTS)})
    assert local_external == [], "import it at the top of the file, or list it in lmforge.layers.LAZY_IMPORTS"


def test_the_checker_sees_an_upward_import():
    """The resolver itself: relative imports of modules and of packages resolve to absolute names."""
    tree = ast.parse("from ..checkpoint.io import save_checkpoint\nfrom .. import presets\nfrom . import heads\n")
    nodes = [n for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)]
    assert resolve("lmforge.models.base", nodes[0]) == ["lmforge.checkpoint.io"]
    assert resolve("lmforge.models.base", nodes[1]) == ["lmforge.presets"]
    assert resolve("lmforge.models", nodes[2]) == ["lmforge.models.heads"]
    assert LAYER_OF[unit_of("lmforge.checkpoint.io")] > LAYER_OF[unit_of("lmforge.models.base")]


# ---- ARCHITECTURE.md stays true ----------------------------------------------------------------------
ARCHITECTURE = (SRC.parents[1] / "ARCHITECTURE.md").read_text(encoding="utf-8")


def test_architecture_md_lists_the_declared_layers_in_order():
    import re

    listed = re.findall(r"^\d+\. (\w+): (.+)$", ARCHITECTURE, flags=re.M)
    assert [name for name, _ in listed] == [name for name, _ in LAYERS]
    for (_, text), (_, units) in zip(listed, LAYERS):
        named = re.findall(r"`([\w.]+)`", text)
        assert [u for u in units if u] == [n for n in named if n != "lmforge/__init__.py"]


def test_architecture_md_glossary_matches_the_registries():
    from lmforge.distill.sources import OBJECTIVES as DISTILL_OBJECTIVES
    from lmforge.finetune.tasks import TASKS as FINETUNE_TASKS
    from lmforge.infer.pipelines import PIPELINES
    from lmforge.models.heads import HEADS
    from lmforge.data.objectives import OBJECTIVES

    rows = {line.split("|")[2].strip(" `"): line.split("|")[3] for line in ARCHITECTURE.splitlines()
            if line.startswith("| ") and "`lmforge." in line}
    for registry, names in (("lmforge.models.heads.HEADS", HEADS), ("lmforge.finetune.tasks.TASKS", FINETUNE_TASKS),
                            ("lmforge.data.objectives.OBJECTIVES", OBJECTIVES),
                            ("lmforge.distill.sources.OBJECTIVES", DISTILL_OBJECTIVES),
                            ("lmforge.infer.pipelines.PIPELINES", PIPELINES)):
        assert [n.strip(" `") for n in rows[registry].split(",")] == list(names), registry


def test_architecture_md_call_path_names_functions_that_exist():
    import importlib
    import re

    path = ARCHITECTURE.split("## One call traced", 1)[1]
    for dotted in set(re.findall(r"`((?:lmforge\.)?[a-z_]+\.[\w.]+)`", path)):
        parts = dotted.removeprefix("lmforge.").split(".")
        for split in range(len(parts), 0, -1):  # the longest importable module prefix, then attributes
            try:
                target = importlib.import_module("lmforge." + ".".join(parts[:split]))
            except ModuleNotFoundError:
                continue
            for attribute in parts[split:]:
                assert hasattr(target, attribute), f"ARCHITECTURE.md names {dotted}, which does not exist"
                target = getattr(target, attribute)
            break
        else:
            pytest.fail(f"ARCHITECTURE.md names {dotted}, which does not exist")


# ---- registries own the decisions by name ---------------------------------------------------------------
def registered_names() -> set[str]:
    from lmforge.data.objectives import OBJECTIVES
    from lmforge.distill.sources import OBJECTIVES as DISTILL_OBJECTIVES
    from lmforge.finetune.tasks import TASKS as FINETUNE_TASKS
    from lmforge.infer.pipelines import PIPELINES
    from lmforge.models.heads import HEADS

    return set(HEADS) | set(FINETUNE_TASKS) | set(OBJECTIVES) | set(DISTILL_OBJECTIVES) | set(PIPELINES)


# Modules that may still compare a registered name: the Hugging Face rule tables (their architectures and
# model types are Hugging Face's names).
NAME_COMPARISONS_ALLOWED = ("lmforge.checkpoint.hf",)


def test_no_code_compares_task_names_outside_the_registries():
    names = registered_names()

    def strings(node) -> list[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return [s for element in node.elts for s in strings(element)]
        return []

    found = []
    for path in sorted(SRC.rglob("*.py")):
        module = module_name(path)
        if module.startswith(NAME_COMPARISONS_ALLOWED):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Compare) and all(isinstance(op, (ast.Eq, ast.NotEq, ast.In, ast.NotIn))
                                                     for op in node.ops):
                compared = [s for side in [node.left, *node.comparators] for s in strings(side)]
                if any(s in names for s in compared):
                    found.append(f"{module}:{node.lineno} compares {compared}")
    assert found == [], "put the decision on the registry entry that owns the name (a head, a TaskSpec, ...)"


def test_every_finetune_task_declares_what_it_decides():
    from lmforge.finetune.scorers import Scorer
    from lmforge.finetune.tasks import TASKS
    from lmforge.models.heads import HEADS

    for name, spec in TASKS.items():
        assert spec.name == name and spec.head in HEADS, name
        assert spec.metric and spec.metric_title and spec.mode in ("max", "min"), name
        assert issubclass(spec.scorer, Scorer) and callable(spec.read) and spec.files and spec.family_advice, name
    assert len({spec.head for spec in TASKS.values()}) == len(TASKS)  # one task per head: evaluate finds it


def test_every_distillation_objective_names_heads_and_data():
    from lmforge.distill.sources import OBJECTIVES
    from lmforge.finetune.tasks import HEAD_TASKS
    from lmforge.models.heads import HEADS

    for name, objective in OBJECTIVES.items():
        assert objective.heads and all(head in HEADS for head in objective.heads), name
        assert objective.shards or objective.files, name
        assert objective.quality or all(head in HEAD_TASKS for head in objective.heads), name  # the task's metric


def test_commands_only_parse_call_and_print():
    """commands/ holds argument parsing and printing; the work is in the library (a file stays small)."""
    sizes = {path.name: len(path.read_text(encoding="utf-8").splitlines()) for path in (SRC / "commands").glob("*.py")}
    assert max(sizes.values()) <= 150, sizes
