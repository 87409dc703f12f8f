"""Every checkpoint under models/ loads, fits the shipped configs, and its README quotes its metrics.

A shipped model is installed to share/ and named by package:// in configs, launch arguments and
the README, so a broken one fails at a user's `ros2 launch`, not here, unless this checks it. Its
README's result tables are what users read: each must say what the metrics files it names hold.
"""
import json
import re
from pathlib import Path

import pytest

from policytrim_ros.config import from_dict, load_yaml, ros_parameters
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.envs.factory import suite_joint_names
from policytrim_ros.policy.checkpoint import load_checkpoint

REPO = Path(__file__).resolve().parents[2]
MODELS = sorted(p for p in (REPO / 'models').iterdir() if p.is_dir())
MAX_FILE_BYTES = 5 * 1024 * 1024

# A row is identified by its task, policy and h (n_action_steps), or for a curve row (curve.json)
# its horizon: the fixed h, 'learned' or 'divergence'. README column -> key of the file's rows:
VALUES = {'SR': 'success_rate', 'steps S': 'steps', 'inference calls': 'inference_calls', 'calls': 'inference_calls',
          'episodes': 'episodes', 'Spd vs h=4': 'speedup', 'Spd (a) vs h = 4': 'speedup_vs_default_h',
          'Spd (b) vs best h': 'speedup_vs_best_h', 'ROS s / episode': 'ros_wall_clock_s',
          'Spd (a)': 'speedup_vs_default_h', 'Spd (b)': 'speedup_vs_best_h', 'SR 95% low': 'success_rate_low',
          'SR 95% high': 'success_rate_high',
          'wall-clock s per episode': 'wall_clock_s'}
POLICY_LABELS = {'baseline (h = 4)': 'baseline (default h)'}   # the README's name for the benchmark's row
OUT = re.compile(r'--out ((?:models|bench/results)/[\w.-]+(?:/[\w.-]+)?)')


def result_tables(readme: Path):
    """(metrics file, header, rows) of each README table with a 'task' column, the metrics file
    being the JSON in the folder of the last ``--out`` before the table."""
    text = readme.read_text()
    for match in re.finditer(r'((?:^\|.*\|\n)+)', text, re.M):
        lines = match.group(1).strip().splitlines()
        header = [c.strip() for c in lines[0].strip('|').split('|')]
        if header[0] != 'task':
            continue
        outs = OUT.findall(text[:match.start()])
        assert outs, f'{readme}: no --out before the table at {lines[0]!r} says where its numbers are'
        folder = REPO / outs[-1]
        files = [f for f in ('sweep.json', 'efficiency.json', 'curve.json') if (folder / f).is_file()]
        assert files, f'{readme}: {outs[-1]} (the table at {lines[0]!r}) holds no sweep.json, efficiency.json or curve.json'
        rows = [[c.strip() for c in line.strip('|').split('|')] for line in lines[2:]]
        yield folder / files[0], header, rows


TABLES = [(model, n) for model in MODELS for n, _ in enumerate(result_tables(model / 'README.md'))]


@pytest.mark.parametrize('model', MODELS, ids=lambda p: p.name)
def test_shipped_model_is_small_loads_and_says_how_it_was_made(model):
    for path in model.rglob('*'):
        assert path.stat().st_size <= MAX_FILE_BYTES, f'{path} is over 5 MB'
    readme = (model / 'README.md').read_text()
    assert 'How it was made' in readme and 'seed' in readme, f'{model.name}/README.md lacks its command and seed'
    _, config, _ = load_checkpoint(model)
    assert config.joint_names in (suite_joint_names('arm'), suite_joint_names('metaworld'))


@pytest.mark.parametrize('model, n', TABLES, ids=[f'{m.name}-{n}' for m, n in TABLES])
def test_readme_result_tables_match_the_metrics_files_they_name(model, n):
    """Every number of the table (SR, steps, calls, Spd, wall-clock) is its row of the metrics file,
    rounded as written; a row the file lacks fails too."""
    path, header, rows = list(result_tables(model / 'README.md'))[n]
    data = {(str(r['task']), str(r.get('policy', '')), '' if 'horizon' in r else str(r.get('n_action_steps', '')),
             str(r.get('horizon', ''))): r for r in json.loads(path.read_text())['rows']}   # a curve row: by horizon
    for cells in rows:
        cell = dict(zip(header, cells))
        key = (cell['task'], POLICY_LABELS.get(cell.get('policy'), cell.get('policy', '')),
               str(float(cell['h'])) if 'h' in cell else '', cell.get('horizon', ''))
        if not cell.get('policy'):   # a sweep row: no policy column in the file either
            key = (key[0], '', key[2], key[3])
        assert key in data, f'{path.relative_to(REPO)} has no row {key} (README {model.name}, {cells})'
        for column, name in VALUES.items():
            written = cell.get(column, '')
            if not written:
                continue
            decimals = len(written.partition('.')[2])
            assert f'{data[key][name]:.{decimals}f}' == written, (
                f'{model.name}/README.md {key} {column}: {written}, {path.relative_to(REPO)}: {data[key][name]}')


@pytest.mark.parametrize('model', [m for m in MODELS if 'metaworld' not in m.name], ids=lambda p: p.name)
def test_arm_models_see_cameras_the_demo_config_renders(model):
    """config/sim.yaml's sim_node renders every camera each arm model was trained on, at its size."""
    env_params = ros_parameters(load_yaml(REPO / 'config' / 'sim.yaml'), 'sim_node')['env']
    env = from_dict(EnvConfig, env_params)
    _, config, _ = load_checkpoint(model)
    cameras = config.cameras or env.cameras[:1]
    assert set(cameras) <= set(env.cameras), f'{model.name} needs {cameras}, sim.yaml renders {env.cameras}'
    assert config.image_width == env.image_width * len(cameras)
    assert config.image_height == env.image_height
