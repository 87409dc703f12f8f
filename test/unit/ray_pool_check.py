"""The work of test_ray_pool.py, run in a process of its own inside a private network namespace.

    python test/unit/ray_pool_check.py OUT_JSON

Rolls the same jobs out with ``RolloutPool`` and with a 2-worker ``RayRolloutPool`` on a Ray
instance of its own (``address: ''``), through a weights change, a collect without weights and a
lost worker, and with 2 envs a worker in lockstep; then one iteration of ``train_policytrim`` with
2 local workers and with 2 workers on the rollout node of a two-node Ray cluster (``address:
HOST:PORT``, ``node_resource``). Writes
what the test compares as JSON: fingerprints (metrics and SHA-256 of the recorded arrays) of every
rollout, the trainers' scalars and weights, and the network interfaces this process saw.
"""
import csv
import hashlib
import json
import socket
import sys
import tempfile
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.execution.config import SafetyConfig
from policytrim_ros.policy.checkpoint import load_tensors
from policytrim_ros.policy.vla import VLAConfig
from policytrim_ros.policy.vla.modeling_vla import VLAModel
from policytrim_ros.robots.arm import JOINT_NAMES
from policytrim_ros.training.grpo import GRPOConfig
from policytrim_ros.training.ray_pool import RayRolloutPool
from policytrim_ros.training.trainer import PolicyTrimConfig, train_policytrim
from policytrim_ros.training.workers import RolloutJob, RolloutPool, RolloutsConfig, RolloutSetup

CONFIG = VLAConfig(vision_channels=(4, 8, 8), vision_keypoints=4, hidden_size=32, num_layers=1, num_heads=2,
                   joint_names=JOINT_NAMES)
RAY = RolloutsConfig(engine='ray', workers_per_node=2)
# test/smoke/test_policytrim.py's tiny Stage 1 run on the shipped baseline (its groups carry signal);
# 2 local workers as the 2 Ray workers: the same shares of jobs, so the same lockstep batches
TINY = PolicyTrimConfig(init='package://policytrim_ros/models/bc-wrist-more-ft', tasks=('reach',), iterations=1,
                        groups_per_iteration=2, group_size=3, max_episode_steps=30, workers=2, checkpoint_every=1,
                        log_std=-2.0, grpo=GRPOConfig(minibatch_size=16))
TINY_ENV = EnvConfig(cameras=('scene_camera', 'wrist_camera'))   # the baseline sees both cameras


def fingerprint(rollout) -> dict:
    """What a rollout is: its outcome and a SHA-256 over every array it recorded."""
    digest = hashlib.sha256()
    for array in (rollout.chunks, rollout.images, rollout.states, rollout.executed):
        digest.update(np.ascontiguousarray(array).tobytes())
    m = rollout.metrics
    return {'episode_id': m.episode_id, 'success': bool(m.success), 'steps': int(m.steps),
            'inference_calls': int(m.inference_calls), 'sha256': digest.hexdigest()}


def scalars(run: Path) -> dict:
    with (run / 'scalars.csv').open() as f:
        return {row['metric']: row['value'] for row in csv.DictReader(f)}


def main(out: Path) -> None:
    result = {'interfaces': sorted(name for _, name in socket.if_nameindex())}
    torch.manual_seed(0)
    model = VLAModel(CONFIG)
    model.set_normalization(np.zeros(7), np.ones(7), np.zeros(7), np.full(7, 0.01))
    setup = RolloutSetup(model=CONFIG, env=EnvConfig(), safety=SafetyConfig(), max_episode_steps=8)
    jobs = [RolloutJob('reach', 1000, 4, noise_seed=1), RolloutJob('push', 1001, 8, noise_seed=2),
            RolloutJob('reach', 1000, 4, noise_seed=3), RolloutJob('pick_place', 1002, 2, noise_seed=4),
            RolloutJob('push', 1003, 4, noise_seed=5)]
    # a fresh process for the local pool too: this one may run torch with other thread settings
    with RolloutPool(setup, workers=1) as local, RayRolloutPool(setup, RAY) as ray_pool:
        result['workers'] = ray_pool.workers
        result['local'] = [fingerprint(r) for r in local.collect(model.state_dict(), jobs)]
        result['ray'] = [fingerprint(r) for r in ray_pool.collect(model.state_dict(), jobs)]
        with torch.no_grad():
            model.log_std_param.fill_(-3.0)   # a new version: every worker must load it
        result['local_v2'] = [fingerprint(r) for r in local.collect(model.state_dict(), jobs)]
        result['ray_v2'] = [fingerprint(r) for r in ray_pool.collect(model.state_dict(), jobs)]
        result['ray_v2_no_weights'] = [fingerprint(r) for r in ray_pool.collect(None, jobs)]
        import ray
        ray.kill(ray_pool._actors[0])   # a worker lost: its jobs run on the other
        result['ray_v2_one_lost'] = [fingerprint(r) for r in ray_pool.collect(None, jobs)]
        result['workers_after_loss'] = ray_pool.workers
    # lockstep: each worker steps 2 envs through its share of the jobs, in a process or in an actor
    lockstep = replace(setup, envs_per_worker=2)
    with RolloutPool(lockstep, workers=2) as local, RayRolloutPool(lockstep, RAY) as ray_pool:
        result['local_lockstep'] = [fingerprint(r) for r in local.collect(model.state_dict(), jobs)]
        result['ray_lockstep'] = [fingerprint(r) for r in ray_pool.collect(model.state_dict(), jobs)]
    # A cluster of two nodes on this machine, as docs/scale-out.md sets one up: a head that hosts no
    # workers (the learner's), and a rollout node that offers the 'rollouts' resource.
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={'num_cpus': 0})
    with tempfile.TemporaryDirectory() as runs:
        try:
            cluster.add_node(num_cpus=2, resources={'rollouts': 1})
            result['placement_errors'] = []   # configs no node can host stop at once, with the reason
            for wrong in ({'node_resource': 'arm_9'}, {'node_resource': 'rollouts', 'workers_per_node': 3}):
                try:
                    RayRolloutPool(setup, RolloutsConfig(engine='ray', address=cluster.address, **wrong)).close()
                except RuntimeError as err:
                    result['placement_errors'].append(str(err))
            on_cluster = RolloutsConfig(engine='ray', address=cluster.address, node_resource='rollouts')
            train_policytrim(replace(TINY, rollouts=on_cluster, out_dir=f'{runs}/ray'), env=TINY_ENV,
                             progress=False)
        finally:
            cluster.shutdown()
        train_policytrim(replace(TINY, out_dir=f'{runs}/local'), env=TINY_ENV, progress=False)
        result['scalars'] = {engine: scalars(Path(runs) / engine) for engine in ('local', 'ray')}
        local, ray_trained = (load_tensors(f'{runs}/{e}/last/model.safetensors') for e in ('local', 'ray'))
        result['same_weights'] = local.keys() == ray_trained.keys() and all(torch.equal(local[k], ray_trained[k])
                                                                             for k in local)
    out.write_text(json.dumps(result, indent=1))


if __name__ == '__main__':
    main(Path(sys.argv[1]))
