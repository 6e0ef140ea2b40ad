"""The dependency rule, read from the import graph: data -> augment -> methods -> engine, pruning alone,
eval on top, and no cycles. Every import counts, including those inside functions."""

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# Each part of the project, and the parts it may import. The order is the layering; a part absent from
# another's list is below it or beside it, never above. Settings live at the edge: only the config package, the
# build step and the command lines read a config.
ALLOWED = {
    "ssl_emp.pruning": set(),  # stands alone on torch
    "ssl_emp.device": set(),
    "ssl_emp.distributed": set(),
    "ssl_emp.checkpoint": set(),
    "ssl_emp.tracking": {"ssl_emp.commands"},
    "ssl_emp.progress": set(),  # a bar or plain lines, for any loop
    "ssl_emp.commands": set(),  # the commands a run prints, spelled to run as printed (standard library only)
    "ssl_emp.data": {"ssl_emp.progress"},
    "ssl_emp.models": set(),
    "ssl_emp.methods": {"ssl_emp.distributed", "ssl_emp.device", "ssl_emp.pruning"},
    "ssl_emp.evaluation": {
        "ssl_emp.checkpoint",
        "ssl_emp.data",
        "ssl_emp.device",
        "ssl_emp.export",
        "ssl_emp.models",
        "ssl_emp.progress",
    },
    "ssl_emp.engine": {
        "ssl_emp.checkpoint",
        "ssl_emp.commands",
        "ssl_emp.data",
        "ssl_emp.device",
        "ssl_emp.distributed",
        "ssl_emp.evaluation",
        "ssl_emp.methods",
        "ssl_emp.progress",
        "ssl_emp.pruning",
    },
    "ssl_emp.export": {"ssl_emp.checkpoint", "ssl_emp.models"},
    "ssl_emp.curation": {"ssl_emp.pruning"},  # a pool's copies, clusters and outliers: torch and the clustering
    # the build layer and above
    # they declare which names and settings are valid (methods through their torch-free settings module)
    "ssl_emp.config": {"ssl_emp.methods", "ssl_emp.models", "ssl_emp.pruning"},
    "ssl_emp.build": {
        "ssl_emp.checkpoint",
        "ssl_emp.config",
        "ssl_emp.data",
        "ssl_emp.device",
        "ssl_emp.distributed",
        "ssl_emp.engine",
        "ssl_emp.evaluation",
        "ssl_emp.methods",
        "ssl_emp.models",
        "ssl_emp.pruning",
        "ssl_emp.tracking",
    },
    "ssl_emp.pretrain": {
        "ssl_emp.build",
        "ssl_emp.checkpoint",
        "ssl_emp.commands",
        "ssl_emp.config",
        "ssl_emp.data",
        "ssl_emp.engine",
    },
    # the audit command: a short pretraining through the one-call API, the embeddings, the curation, its report
    "ssl_emp.audit": {
        "ssl_emp",
        "ssl_emp.checkpoint",
        "ssl_emp.config",
        "ssl_emp.curation",
        "ssl_emp.data",
        "ssl_emp.device",
        "ssl_emp.engine",
        "ssl_emp.evaluation",
    },
    "ssl_emp.api": {"ssl_emp.build", "ssl_emp.config", "ssl_emp.engine", "ssl_emp.export"},
    "ssl_emp.plot": set(),  # reads metrics.jsonl only
    "ssl_emp": {"ssl_emp.api", "ssl_emp.export"},  # the package's load_backbone and (lazily) train
    "eval": {
        "ssl_emp.checkpoint",
        "ssl_emp.data",
        "ssl_emp.device",
        "ssl_emp.engine",
        "ssl_emp.evaluation",
        "ssl_emp.progress",
        "ssl_emp.pruning",
        "ssl_emp.tracking",
    },
}
# The parts that read settings; every other part takes plain keyword arguments and imports no pydantic.
SETTINGS_LAYER = {"ssl_emp.config", "ssl_emp.build", "ssl_emp.pretrain", "ssl_emp.api", "ssl_emp.audit", "eval"}


def _part(module: str) -> str:
    """The part of the project a module belongs to: the longest key of ALLOWED that prefixes it."""
    matches = [p for p in ALLOWED if module == p or module.startswith(p + ".")]
    return max(matches, key=len)


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(project_only: bool = True) -> dict[str, set[str]]:
    """``{module: modules it imports}`` for every module of ssl_emp and eval: the project's own modules, or
    (``project_only=False``) every top-level package besides. ``from pkg import name`` counts as importing
    ``pkg.name`` where that is a module, else ``pkg``."""
    paths = [*(ROOT / "ssl_emp").rglob("*.py"), *(ROOT / "eval").rglob("*.py")]
    modules = {_module_name(path) for path in paths}
    graph = {}
    for path in paths:
        imported = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                imported |= {alias.name for alias in node.names}
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                for alias in node.names:
                    submodule = f"{node.module}.{alias.name}"
                    imported.add(submodule if submodule in modules else node.module)
        graph[_module_name(path)] = {
            m if m in modules or project_only else m.split(".")[0] for m in imported if m in modules or not project_only
        }
    return graph


def import_graph() -> dict[str, set[str]]:
    return imports(project_only=True)


def layering_violations(graph: dict[str, set[str]]) -> list[str]:
    violations = []
    for module, imported in graph.items():
        here = _part(module)
        for target in imported:
            there = _part(target)
            if there != here and there not in ALLOWED[here]:
                violations.append(f"{module} imports {target} ({here} -> {there})")
    return sorted(violations)


def test_each_part_imports_only_what_the_layering_allows():
    violations = layering_violations(import_graph())
    assert not violations, "\n".join(violations)


def test_only_the_settings_layer_reads_configs():
    """Below the build step every part takes plain keyword arguments: no pydantic, no ssl_emp.config."""
    readers = sorted(
        f"{module} imports {target}"
        for module, imported in imports(project_only=False).items()
        if _part(module) not in SETTINGS_LAYER
        for target in imported
        if target == "pydantic" or target.startswith("ssl_emp.config")
    )
    assert not readers, "\n".join(readers)


def test_the_parts_form_no_cycle():
    graph = import_graph()
    edges = {part: set() for part in ALLOWED}
    for module, imported in graph.items():
        for target in imported:
            if _part(target) != _part(module):
                edges[_part(module)].add(_part(target))
    state = {}

    def visit(part, path):
        state[part] = "open"
        for nxt in edges[part]:
            assert state.get(nxt) != "open", "import cycle: " + " -> ".join([*path, part, nxt])
            if nxt not in state:
                visit(nxt, [*path, part])
        state[part] = "done"

    for part in edges:
        if part not in state:
            visit(part, [])


def test_the_rule_reports_the_knots_it_exists_to_prevent():
    """Not vacuous: the edges this project once had (the pruner reading the methods' output type, the engine's
    monitor importing an eval command) are reported when put back into the real graph."""
    graph = import_graph()
    graph["ssl_emp.pruning.scorers.emp"].add("ssl_emp.methods.base")
    graph["ssl_emp.engine.monitor"].add("eval.knn")
    assert layering_violations(graph) == [
        "ssl_emp.engine.monitor imports eval.knn (ssl_emp.engine -> eval)",
        "ssl_emp.pruning.scorers.emp imports ssl_emp.methods.base (ssl_emp.pruning -> ssl_emp.methods)",
    ]
