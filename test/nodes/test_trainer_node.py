"""trainer_node + policy_node + sim_node over DDS: PolicyTrim GRPO with its episodes on the robot side.

Two iterations of one group of 2 on the shipped baseline: the weights are hot-reloaded into
policy_node before each iteration (versions 1 and 2 in the EpisodeStats), every episode is
persisted and recorded (one bag each, by recorder_node), and the run's scalars equal those of the
in-process trainer on the same seeds. A kill -9
of any of the three processes mid-episode, then a restart, changes nothing: no episode lost, none
counted twice, the same scalars.
"""
import csv
import subprocess
import sys
import time

import pytest
import yaml

from policytrim_ros import launcher
from policytrim_ros.config import from_dict
from policytrim_ros.data.bag import read_episode_bag
from policytrim_ros.launcher import NodeSpec
from policytrim_ros.msg import ChunkStats, EpisodeStats
from policytrim_ros.training.trainer import PolicyTrimConfig, iteration_jobs, stage_horizons

from harness import node_log, wait_for

PARAMS = launcher.package_share() / 'config' / 'sim.yaml'
RUN = {'init': 'package://policytrim_ros/models/bc-wrist-h32-dagger', 'tasks': ['reach'], 'iterations': 2,
       'groups_per_iteration': 1, 'group_size': 2, 'base_n_action_steps': 8, 'acceptance_ratio_count': 2,
       'log_std': -2.5, 'lr': 5.0e-6, 'workers': 0, 'seed': 0, 'checkpoint_every': 1,
       'envs_per_worker': 1}   # one episode at a time, as through the nodes (lockstep batches differ in the last bits)
EPISODES = RUN['iterations'] * RUN['groups_per_iteration'] * RUN['group_size']


def read_scalars(path):
    """(iteration, metric, value) rows: everything but the wall-clock column."""
    with open(path, newline='') as f:
        return [tuple(row[:3]) for row in csv.reader(f)][1:]


def train_in_process(command: str, run: dict, folder) -> list:
    """``policytrim <command>`` on ``run`` in a process of its own (as a user runs it: torch's thread
    settings in this test process could change the last bits); its scalars."""
    path = folder / 'config.yaml'
    path.write_text(yaml.safe_dump({**run, 'out_dir': str(folder / 'run')}))
    extra = ['--stage', '1'] if command == 'train' else []
    subprocess.run([sys.executable, '-m', 'policytrim_ros.cli', command, *extra, '--config', str(path),
                    '--params', str(PARAMS)], check=True, capture_output=True, timeout=300)
    return read_scalars(folder / 'run' / 'scalars.csv')


@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    """The in-process trainer's scalars and jobs on the same config and seeds."""
    scalars = train_in_process('train', RUN, tmp_path_factory.mktemp('in-process'))
    config = from_dict(PolicyTrimConfig, {**RUN, 'out_dir': 'unused'})
    jobs = [job for i in range(config.iterations) for job in iteration_jobs(config, i, stage_horizons(config, 32))]
    return scalars, jobs


def run_config(tmp_path):
    path = tmp_path / 'train.yaml'
    path.write_text(yaml.safe_dump({**RUN, 'out_dir': str(tmp_path / 'run')}))
    return path


def robot_side(tmp_path, name: str) -> NodeSpec:
    if name == 'sim_node':
        return NodeSpec('sim_node', [PARAMS], {})
    if name == 'recorder_node':
        return NodeSpec('recorder_node', [PARAMS], {'recording.output_dir': str(tmp_path / 'bags')})
    return NodeSpec('policy_node', [PARAMS], {'trainer.enabled': True,
                                              'episode.log_path': str(tmp_path / 'episodes.jsonl')})


def trainer_spec(tmp_path) -> NodeSpec:
    return NodeSpec('trainer_node', [], {'run.config': str(run_config(tmp_path)), 'run.stage': 1,
                                         'episodes.episode_timeout_s': 60.0})


def start(spec: NodeSpec, tmp_path, logs: str = 'logs') -> launcher.Launch:
    return launcher.Launch([spec], launcher.ros_env(), log_dir=tmp_path / logs).__enter__()


def test_trainer_node_runs_grpo_through_the_nodes_like_the_in_process_trainer(tmp_path, harness, reference):
    scalars, jobs = reference
    stats = harness.record(EpisodeStats, 'policytrim/episode_stats', 100)
    chunks = harness.record(ChunkStats, 'policytrim/chunk_stats', 1000)
    robot = [start(robot_side(tmp_path, name), tmp_path) for name in ('sim_node', 'policy_node', 'recorder_node')]
    try:
        # the recorder has discovered policy_node's publishers (what is published before is lost)
        wait_for(lambda: all(f'{topic}: 1 publisher(s)' in node_log(tmp_path, 'recorder_node') for topic in
                             ('/policytrim/chunk_stats', '/arm_controller/joint_trajectory', '/camera2/image_raw')),
                 60.0, 'the recorder to discover policy_node and sim_node')
        done = subprocess.run(trainer_spec(tmp_path).command(), env=launcher.ros_env(), capture_output=True,
                              text=True, timeout=300)
        trained = [s for s in stats if s.episode_id.startswith('train-')]
        wait_for(lambda: all((tmp_path / 'bags' / s.episode_id / 'metadata.yaml').is_file() for s in trained),
                 30.0, 'every training episode\'s bag to close')
    finally:
        for run in robot:
            run.stop()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + node_log(tmp_path, 'policy_node')
    assert read_scalars(tmp_path / 'run' / 'scalars.csv') == scalars
    # two hot reloads: iteration 1 runs version 1, iteration 2 version 2; every episode sampled with its job's seed
    assert [s.weights_version for s in trained] == [1, 1, 2, 2]
    assert [s.sampling_seed for s in trained] == [job.noise_seed for job in jobs]
    assert [s.n_action_steps for s in trained] == [job.n_action_steps for job in jobs]
    for s in trained:
        calls = [c for c in chunks if c.episode_id == s.episode_id]
        assert len(calls) == s.inference_calls and calls
        assert {(c.weights_version, c.sampling_seed) for c in calls} == {(s.weights_version, s.sampling_seed)}
    assert len(list((tmp_path / 'run' / 'episodes').glob('*.safetensors'))) == EPISODES
    assert 'policy_node runs weights version 2' in done.stderr + done.stdout
    # one bag per training episode, with its calls' provenance
    for s in trained:
        episode = read_episode_bag(tmp_path / 'bags' / s.episode_id)
        assert [(c.weights_version, c.sampling_seed, c.n_action_steps) for c in episode.calls] == \
            [(c.weights_version, c.sampling_seed, c.n_action_steps) for c in chunks if c.episode_id == s.episode_id]


def test_a_kill_9_of_each_process_mid_episode_changes_nothing(tmp_path, harness, reference):
    """trainer_node, then policy_node, then sim_node are each SIGKILLed in the middle of a training
    episode (a later one each time) and restarted: the run ends with the in-process scalars, every
    episode persisted once."""
    scalars, _ = reference
    stats = harness.record(EpisodeStats, 'policytrim/episode_stats', 100)
    chunks = harness.record(ChunkStats, 'policytrim/chunk_stats', 1000)
    runs = {name: start(robot_side(tmp_path, name), tmp_path) for name in ('sim_node', 'policy_node')}
    runs['trainer_node'] = start(trainer_spec(tmp_path), tmp_path)
    killed: set[str] = set()   # episodes under way at an earlier kill
    try:
        for n, victim in enumerate(('trainer_node', 'policy_node', 'sim_node')):
            def mid_episode():
                finished = {s.episode_id for s in stats}
                running = [c.episode_id for c in chunks if c.episode_id.startswith('train-') and c.call_index >= 1
                           and c.episode_id not in finished and c.episode_id not in killed]
                return len(finished) >= 1 and running and running[-1]
            episode = wait_for(mid_episode, 120.0, f'a training episode under way to kill {victim} in')
            killed.add(episode)
            runs[victim].processes[victim].kill()   # SIGKILL: no shutdown code runs
            runs[victim].processes[victim].wait()
            runs[victim].stop()                     # closes its log
            spec = trainer_spec(tmp_path) if victim == 'trainer_node' else robot_side(tmp_path, victim)
            runs[victim] = start(spec, tmp_path, logs=f'logs-restart-{n}')
        trainer = runs['trainer_node'].processes['trainer_node']
        deadline = time.monotonic() + 240
        while trainer.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
    finally:
        for run in runs.values():
            run.stop()
    logs = ''.join(p.read_text()[-1500:] for p in sorted(tmp_path.glob('logs*/*.log')))
    assert trainer.returncode == 0, logs
    assert read_scalars(tmp_path / 'run' / 'scalars.csv') == scalars, logs
    assert len(list((tmp_path / 'run' / 'episodes').glob('*.safetensors'))) == EPISODES


HEAD_RUN = {'init': 'package://policytrim_ros/models/bc-wrist-h32-dagger', 'horizons': [8, 32], 'tasks': ['reach'],
            'iterations': 1, 'decisions_per_iteration': 1, 'workers': 0, 'seed': 0, 'checkpoint_every': 1,
            'envs_per_worker': 1}


def test_trainer_node_trains_the_efficiency_head_through_the_nodes_like_the_in_process_trainer(tmp_path, harness):
    """kind horizon: policy_node starts from the head-less VLA; the first hot reload is a checkpoint
    with the head (the trainer's seeded initial head), then the trunk and its branches (one per h)
    sample h through policy_node; the scalars equal the in-process train-horizon's."""
    (tmp_path / 'in-process').mkdir()
    reference = train_in_process('train-horizon', HEAD_RUN, tmp_path / 'in-process')
    stats = harness.record(EpisodeStats, 'policytrim/episode_stats', 100)
    path = tmp_path / 'head.yaml'
    path.write_text(yaml.safe_dump({**HEAD_RUN, 'out_dir': str(tmp_path / 'run')}))
    robot = [start(robot_side(tmp_path, name), tmp_path) for name in ('sim_node', 'policy_node')]
    try:
        done = subprocess.run(NodeSpec('trainer_node', [], {'run.kind': 'horizon', 'run.config': str(path)}).command(),
                              env=launcher.ros_env(), capture_output=True, text=True, timeout=300)
    finally:
        for run in robot:
            run.stop()
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:] + node_log(tmp_path, 'policy_node')
    assert read_scalars(tmp_path / 'run' / 'scalars.csv') == reference
    trained = [s for s in stats if s.episode_id.startswith('train-')]
    assert len(trained) == 1 + len(HEAD_RUN['horizons']) and {s.weights_version for s in trained} == {1}
