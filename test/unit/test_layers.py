"""The package's import contract: layers depend one way, and no imports go in a circle.

Layers, lowest first; a module may import its own component and any LOWER layer, never a higher
one, nor a sibling component of its own layer:

    0  constants, config, resources, trajectory   leaves: names, config helpers, package:// paths,
                                                   timed trajectories (numpy only)
    1  robots, launcher        what simulators and policies agree on per robot; the process launcher
    2  policy                  the policy protocol (Observation, ChunkPolicy), backends, experts
    3  envs                    simulated robots and tasks; operators
    4  execution               chunk executor, safety, metrics, controller rules, run_episode
    5  data, evaluation        demonstrations and bags; sweeps and reports
    6  training                BC and PolicyTrim (GRPO)
    7  cli                     the `policytrim` command
    8  msg, srv                the generated ROS interfaces
    9  nodes, launch_support   the ROS 2 nodes and the launch files' helpers

Every import counts: module level, inside functions, and under ``if TYPE_CHECKING``. A cycle between
modules is only checked among the imports that run (``TYPE_CHECKING`` ones excluded). A new
top-level module or package must be placed in ``LAYERS`` here.
"""
from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import pytest

PACKAGE = 'policytrim_ros'
ROOT = Path(__file__).resolve().parents[2] / PACKAGE
LAYERS: tuple[tuple[str, ...], ...] = (
    ('constants', 'config', 'resources', 'trajectory'),
    ('robots', 'launcher'),
    ('policy',),
    ('envs',),
    ('execution',),
    ('data', 'evaluation'),
    ('training',),
    ('cli',),
    ('msg', 'srv'),
    ('nodes', 'launch_support'),
)
RANK = {component: rank for rank, components in enumerate(LAYERS) for component in components}


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT.parent).with_suffix('').parts)
    return '.'.join(parts[:-1] if parts[-1] == '__init__' else parts)


def component(module: str) -> str:
    """The top-level module or subpackage of the package that ``module`` belongs to."""
    parts = module.split('.')
    return parts[1] if len(parts) > 1 else '__init__'


def _type_checking_lines(tree: ast.Module) -> set[int]:
    lines = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and 'TYPE_CHECKING' in ast.unparse(node.test):
            for child in node.body:
                lines.update(range(child.lineno, child.end_lineno + 1))
    return lines


def package_imports() -> dict[str, list[tuple[str, int, bool]]]:
    """Module -> the package modules it imports: (name, line, only under TYPE_CHECKING)."""
    imports = defaultdict(list)
    for path in sorted(ROOT.rglob('*.py')):
        module = module_name(path)
        tree = ast.parse(path.read_text(), str(path))
        typing_only = _type_checking_lines(tree)
        here = module if path.name == '__init__.py' else module.rpartition('.')[0]
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ''
                if node.level:
                    anchor = here.split('.')[:len(here.split('.')) - node.level + 1]
                    base = '.'.join(anchor + ([node.module] if node.module else []))
                # `from policytrim_ros.envs import base` imports the submodule, `... import ArmEnv` the package
                targets = [f'{base}.{alias.name}' if f'{base}.{alias.name}' in MODULES else base
                           for alias in node.names]
            else:
                continue
            for target in targets:
                if target.startswith(PACKAGE + '.'):
                    imports[module].append((target, node.lineno, node.lineno in typing_only))
    return imports


MODULES = {module_name(path) for path in ROOT.rglob('*.py')} | {f'{PACKAGE}.msg', f'{PACKAGE}.srv'}
IMPORTS = package_imports()


def test_every_module_belongs_to_a_layer():
    used = {component(m) for m in MODULES if m != PACKAGE} | {component(t) for e in IMPORTS.values() for t, _, _ in e}
    unplaced = sorted(used - set(RANK))
    assert not unplaced, f'place {unplaced} in LAYERS of {__file__}'
    assert not IMPORTS.get(PACKAGE), f'{PACKAGE}/__init__.py must not import its modules: {IMPORTS[PACKAGE]}'


def test_imports_point_down_the_layers():
    wrong = []
    for module, edges in IMPORTS.items():
        for target, line, _ in edges:
            source, dest = component(module), component(target)
            if source != dest and RANK.get(dest, -1) >= RANK.get(source, -1):
                kind = 'a sibling' if RANK.get(dest) == RANK.get(source) else 'a higher layer'
                wrong.append(f'{module}:{line} imports {target} ({kind}: {source} is layer {RANK.get(source)}, '
                             f'{dest} layer {RANK.get(dest)})')
    assert not wrong, 'imports against the layer order:\n' + '\n'.join(wrong)


@pytest.mark.parametrize('lower, higher', [('policy', 'envs'), ('envs', 'execution'), ('envs', 'training'),
                                           ('envs', 'nodes'), ('trajectory', 'execution')])
def test_named_directions(lower, higher):
    """The directions the layering exists for, stated once more so that editing LAYERS cannot drop them."""
    assert RANK[lower] < RANK[higher]
    offenders = [f'{m}:{line} -> {t}' for m, edges in IMPORTS.items() if component(m) == lower
                 for t, line, _ in edges if component(t) == higher]
    assert not offenders, f'{lower} must not import {higher}: {offenders}'


def test_nothing_outside_nodes_imports_nodes():
    offenders = [f'{m}:{line} -> {t}' for m, edges in IMPORTS.items() if component(m) != 'nodes'
                 for t, line, _ in edges if component(t) == 'nodes']
    assert not offenders, offenders


def _cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One cycle of ``graph`` (its nodes in order, the first repeated at the end), or None."""
    state: dict[str, int] = {}   # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None


def test_no_import_cycle_between_components():
    graph = defaultdict(set)
    for module, edges in IMPORTS.items():
        graph[component(module)].update(component(t) for t, _, _ in edges if component(t) != component(module))
    cycle = _cycle(graph)
    assert cycle is None, 'components import each other: ' + ' -> '.join(cycle)


def test_no_import_cycle_between_modules():
    graph = defaultdict(set)
    for module, edges in IMPORTS.items():
        graph[module].update(t for t, _, typing_only in edges if not typing_only and t != module)
    cycle = _cycle(graph)
    assert cycle is None, 'modules import each other: ' + ' -> '.join(cycle)
