"""Launch files and parameter files name only things that exist.

The ROS 2 launch package cannot be installed from PyPI, so the launch files are checked statically:
every Node(...) names this package and an installed executable, every parameter file they use
exists in config/, and every parameter a YAML section sets is declared by that node.
"""
import ast
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from policytrim_ros import launcher
from policytrim_ros.nodes.episode_runner import EpisodeRunnerConfig
from policytrim_ros.nodes.params import config_fields
from policytrim_ros.nodes.policy_config import PolicyNodeConfig
from policytrim_ros.nodes.recorder_node import RecorderNodeConfig
from policytrim_ros.nodes.sim_node import SimNodeConfig
from policytrim_ros.nodes.trainer_node import TrainerNodeConfig

REPO = Path(__file__).resolve().parents[2]
NODE_CONFIGS = {'sim_node': SimNodeConfig, 'policy_node': PolicyNodeConfig, 'episode_runner': EpisodeRunnerConfig,
                'recorder_node': RecorderNodeConfig, 'trainer_node': TrainerNodeConfig}
BUILTIN_PARAMETERS = {'use_sim_time'}
LAUNCH_FILES = sorted((REPO / 'launch').glob('*.launch.py'))
CONFIG_FILES = sorted((REPO / 'config').glob('*.yaml'))
NODE_CONFIG_FILES = [p for p in CONFIG_FILES if p.name != 'controllers.yaml']   # that one is ros2_control's


def declared(executable):
    return {name for name, _, _ in config_fields(NODE_CONFIGS[executable])} | BUILTIN_PARAMETERS


def flat(d, prefix=''):
    for k, v in d.items():
        if isinstance(v, dict):
            yield from flat(v, f'{prefix}{k}.')
        else:
            yield prefix + k


def console_scripts():
    text = (REPO / 'setup.py').read_text()
    return dict(re.findall(r"^\s*'(\w+) = ([\w.]+:\w+)',", text, re.M))


def exec_depends():
    from xml.etree import ElementTree
    root = ElementTree.parse(REPO / 'package.xml').getroot()
    return {e.text for tag in ('exec_depend', 'depend') for e in root.findall(tag)}


def launch_nodes(path):
    """(keyword dict) of every Node(...) call in a launch file; values are AST nodes."""
    tree = ast.parse(path.read_text())
    calls = [n for n in ast.walk(tree) if isinstance(n, ast.Call) and getattr(n.func, 'id', '') == 'Node']
    return [{kw.arg: kw.value for kw in call.keywords} for call in calls]


@pytest.mark.parametrize('path', LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_file_nodes_exist_and_their_parameters_are_declared(path):
    nodes = launch_nodes(path)
    assert nodes, f'{path.name} starts no Node'
    scripts = console_scripts()
    config_names = {p.name for p in CONFIG_FILES} | {p.name for p in (REPO / 'config' / 'training').glob('*.yaml')}
    for kw in nodes:
        package = ast.literal_eval(kw['package'])
        if package != 'policytrim_ros':   # robot_state_publisher, controller_manager, ros_gz_*: ROS's own
            assert package in exec_depends(), f'{path.name} starts {package}, not an exec_depend of package.xml'
            continue
        exe = ast.literal_eval(kw['executable'])
        assert exe in scripts, f'{path.name}: executable {exe} is not a console script'
        assert launcher.executable(exe).exists()
        assert ast.literal_eval(kw['name']) == exe  # YAML sections are keyed by node name
        for d in (n for n in ast.walk(kw['parameters']) if isinstance(n, ast.Dict)):
            for key in (k for k in d.keys if k is not None):   # None: a **mapping unpacked into it
                assert ast.literal_eval(key) in declared(exe), f'{path.name}: {exe} has no parameter {key}'
    referenced = set(re.findall(r"'(\w+\.yaml)'", path.read_text()))
    assert referenced and referenced <= config_names, f'{path.name} names missing config files {referenced}'


@pytest.mark.parametrize('path', NODE_CONFIG_FILES, ids=lambda p: p.name)
def test_config_file_sets_only_declared_parameters_with_valid_values(path):
    from policytrim_ros.config import from_dict, ros_parameters
    data = yaml.safe_load(path.read_text())
    for node_name, section in data.items():
        assert node_name in NODE_CONFIGS, f'{path.name}: unknown node {node_name}'
        unknown = set(flat(section['ros__parameters'])) - declared(node_name)
        assert not unknown, f'{path.name}: {node_name} declares no {sorted(unknown)}'
        values = ros_parameters(data, node_name)
        values.pop('use_sim_time', None)
        from_dict(NODE_CONFIGS[node_name], values)  # raises if a value breaks a rule


@pytest.mark.parametrize('path', CONFIG_FILES + LAUNCH_FILES, ids=lambda p: p.name)
def test_shipped_checkpoints_a_config_names_exist_and_are_installed(path):
    from policytrim_ros import resources
    from policytrim_ros.policy.checkpoint import read_checkpoint_config
    uris = re.findall(r"(package://policytrim_ros/models/[^\s'\"]+)", path.read_text())
    for uri in uris:
        relative = uri.split('/', 3)[3]
        assert uri.startswith('package://policytrim_ros/') and (REPO / relative).is_dir(), uri
        config, _, _ = read_checkpoint_config(resources.resolve(uri))   # installed, with a valid config
        assert config == read_checkpoint_config(REPO / relative)[0]


def test_the_installed_share_is_this_checkout():
    """`ros2 launch`, the node processes and package:// URIs read the installed share/, so it must be
    this checkout (scripts/setup.sh reinstalls after a change): package.xml, the launch files, the
    parameter files and each shipped model's files are byte-identical, and no model the checkout
    no longer ships is still installed with weights."""
    share = launcher.package_share()
    files = [REPO / 'package.xml', *LAUNCH_FILES, *CONFIG_FILES, *(REPO / 'urdf').glob('*.xacro'),
             *(REPO / 'worlds').glob('*.sdf'),
             *(f for model in (REPO / 'models').iterdir() for f in model.iterdir() if f.is_file())]
    stale = [str(f.relative_to(REPO)) for f in files
             if not (share / f.relative_to(REPO)).is_file() or (share / f.relative_to(REPO)).read_bytes() != f.read_bytes()]
    assert not stale, f'installed copies differ from the checkout (run scripts/setup.sh): {stale}'
    installed = {p.parent.name for p in (share / 'models').glob('*/model.safetensors')}
    assert installed == {p.name for p in (REPO / 'models').iterdir()}, 'models installed but no longer shipped'


@pytest.mark.parametrize('exe', sorted(console_scripts()))
def test_each_ros2_run_wrapper_starts_its_own_entry_point(exe):
    """lib/policytrim_ros/<exe>, what `ros2 run policytrim_ros <exe>` starts, runs that console script's
    main: a node refuses an unknown parameter in its own name with rc 2, the CLI prints its usage."""
    wrapper = str(launcher.executable(exe))
    if exe == 'policytrim':
        done = subprocess.run([wrapper, '--help'], env=launcher.ros_env(), capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.startswith('usage: policytrim'), done.stderr[-2000:]
        assert all(command in done.stdout for command in ('eval', 'collect', 'train-bc', 'train', 'release'))
    else:
        done = subprocess.run([wrapper, '--ros-args', '-p', 'no_such.key:=1'], env=launcher.ros_env(),
                              capture_output=True, text=True, timeout=120)
        assert done.returncode == 2, done.stdout[-2000:] + done.stderr[-2000:]
        assert f"unknown parameter 'no_such.key' for {exe}" in done.stderr, done.stderr[-2000:]


def test_messages_and_service_import_and_fill():
    from policytrim_ros.msg import ChunkStats, EpisodeEvent, EpisodeStats
    from policytrim_ros.srv import ResetEpisode
    stats = EpisodeStats(episode_id='e', steps=3, inference_calls=1, chunk_utilization=0.25, end_reason='success')
    assert stats.steps == 3 and ChunkStats(call_index=2).call_index == 2
    assert EpisodeEvent.SUCCESS == 1 and ResetEpisode.Request(task='reach').task == 'reach'


@pytest.mark.parametrize('name', ['sim.yaml', 'deploy.yaml'])
def test_shipped_safety_limits_match_the_embedded_arm(name):
    from policytrim_ros.envs.arm import ArmEnv
    safety = yaml.safe_load((REPO / 'config' / name).read_text())['policy_node']['ros__parameters']['safety']
    env = ArmEnv()
    model_joints = env.joint_names[:-1] + ('finger_left',)  # the gripper command drives finger_left
    lower, upper = env.model.jnt_range[[env.model.joint(n).id for n in model_joints]].T
    assert safety['position_lower'] == pytest.approx(list(lower))
    assert safety['position_upper'] == pytest.approx(list(upper))


@pytest.mark.parametrize('path', sorted((REPO / 'config' / 'training').glob('*.yaml')), ids=lambda p: p.name)
def test_training_configs_load_into_their_dataclasses(path):
    from policytrim_ros import resources
    from policytrim_ros.config import from_dict, load_yaml
    from policytrim_ros.training.bc_config import BCConfig
    from policytrim_ros.training.horizon_trainer import HorizonTrainConfig
    from policytrim_ros.training.offline import OfflineConfig
    from policytrim_ros.training.trainer import PolicyTrimConfig
    values = load_yaml(path)
    if path.name.startswith('bc'):
        init = from_dict(BCConfig, values).init_from
    elif path.name.startswith('offline'):
        init = from_dict(OfflineConfig, values).init_from
    elif path.name.startswith('horizon'):
        init = from_dict(HorizonTrainConfig, values).init
    else:
        init = from_dict(PolicyTrimConfig, values).init
    if init.startswith('runs/'):   # a checkpoint another training config of the chain makes
        made = {f"{load_yaml(other).get('out_dir')}/last" for other in (REPO / 'config' / 'training').glob('*.yaml')}
        # or a chain's start, a model no longer shipped: the file names the page with its recipe
        pages = re.findall(r'docs/experiments/models/[\w-]+\.md', path.read_text())
        assert init in made or (pages and all((REPO / page).is_file() for page in pages)), (
            f'{path.name} starts from {init}, which no training config writes and no docs/experiments/models page explains')
    elif init:
        assert Path(resources.resolve(init), 'model.safetensors').is_file()
