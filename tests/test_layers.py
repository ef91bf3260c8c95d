"""The import layers of `jobs/`: every import points down, and no module imports itself back.

Each module of the `jobs` package belongs to the layer of its longest matching prefix below; a
module may import from its own layer or any layer listed before it, never from one after it.
Imports inside functions count too: a lazy import that runs back up is still a circle.
"""

import ast
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "jobs"

# Bottom first. The features (notifications, schedules) sit above the whole core, which never
# imports them; the fronts (pages, API, consumers, admin, commands) sit on top of everything,
# a feature's own fronts too (they build on the core's: its API object, schemas, form helpers).
FEATURE_FRONTS = tuple(f"jobs.schedules.{front}" for front in ("api", "views", "urls", "admin", "cli", "apps"))
# Teams and the audit log sit at the bottom beside the models (every row's visibility is theirs to say); their fronts on top.
TEAM_FRONTS = tuple(f"jobs.teams.{front}" for front in ("api", "views", "urls", "admin", "apps")) + tuple(
    f"jobs.audit.{front}" for front in ("api", "views", "urls", "admin", "apps", "signals", "middleware", "selectors")
)
LAYERS: list[tuple[str, ...]] = [
    (
        "jobs.errors",
        "jobs.secrets",
        "jobs.nul",
        "jobs.items",
        "jobs.migrations",
        "jobs.models",
        "jobs.forms",
        "jobs.artifacts",
        "jobs.outage",
        "jobs.teams",
        "jobs.audit",
    ),
    ("jobs.optypes.base",),
    ("jobs.optypes",),
    ("jobs.engine.dispatch", "jobs.live.publisher", "jobs.metrics"),
    ("jobs.services",),
    ("jobs.selectors",),
    ("jobs.engine",),
    ("jobs.notifications", "jobs.schedules"),
    ("jobs.live", "jobs.api", "jobs.web", "jobs.templatetags", "jobs.admin", "jobs.management", "jobs.apps", "jobs")
    + FEATURE_FRONTS
    + TEAM_FRONTS,
]


def layer_of(module: str) -> int:
    best, best_length = -1, -1
    for index, prefixes in enumerate(LAYERS):
        for prefix in prefixes:
            if (module == prefix or module.startswith(prefix + ".")) and len(prefix) > best_length:
                best, best_length = index, len(prefix)
    return best


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def imports_of(path: Path) -> set[str]:
    """The `jobs.*` modules a file imports (for `from x import y`, `x.y` when that is a module)."""
    found: set[str] = set()
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(
                    package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base else [])
                )
            for alias in node.names:
                candidate = f"{base}.{alias.name}"
                found.add(candidate if module_path(candidate) else base)
    return {name for name in found if name == "jobs" or name.startswith("jobs.")}


def module_path(module: str) -> Path | None:
    base = ROOT.joinpath(*module.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.exists():
            return candidate
    return None


def graph() -> dict[str, set[str]]:
    edges: dict[str, set[str]] = defaultdict(set)
    for path in PACKAGE.rglob("*.py"):
        if "migrations" in path.parts:
            continue
        source = module_name(path)
        edges[source] |= {target for target in imports_of(path) if target != source}
    return edges


def test_every_module_has_a_layer():
    assert [module for module in graph() if layer_of(module) < 0] == []


def test_no_import_runs_back_up():
    upward = sorted(
        f"{source} imports {target}"
        for source, targets in graph().items()
        for target in targets
        if layer_of(target) > layer_of(source)
    )
    assert upward == []


def test_there_is_no_import_circle():
    edges = graph()
    state: dict[str, int] = {}
    circles: list[list[str]] = []

    def visit(node: str, trail: list[str]) -> None:
        state[node] = 1
        for target in sorted(edges.get(node, ())):
            # A package's __init__ gathering its own modules is not a circle with them.
            if node == target.rpartition(".")[0] and (ROOT.joinpath(*node.split(".")) / "__init__.py").exists():
                continue
            if state.get(target) == 1:
                circles.append(trail[trail.index(target) :] + [target] if target in trail else [node, target])
            elif target not in state:
                visit(target, trail + [target])
        state[node] = 2

    for module in sorted(edges):
        if module not in state:
            visit(module, [module])
    assert circles == []


@pytest.mark.parametrize("core", ["jobs.services", "jobs.engine", "jobs.selectors", "jobs.live", "jobs.models"])
def test_the_core_never_imports_the_features(core):
    offending = sorted(
        f"{source} imports {target}"
        for source, targets in graph().items()
        if source == core or source.startswith(core + ".")
        for target in targets
        if target.startswith(("jobs.notifications", "jobs.schedules"))
    )
    assert offending == []


def test_operation_types_import_only_the_contract_of_the_core():
    """Types (built-in and third-party alike) depend on jobs.optypes.base, never on the engine or
    the services that run them."""
    offending = sorted(
        f"{source} imports {target}"
        for source, targets in graph().items()
        if source.startswith("jobs.optypes")
        for target in targets
        if target.startswith(("jobs.engine", "jobs.services", "jobs.live", "jobs.selectors", "jobs.web", "jobs.api"))
    )
    assert offending == []
