"""Lockstep rollouts with batched inference calls are the rollouts each job gives alone, in job order."""
import numpy as np
import pytest
import torch

from policytrim_ros.envs import ArmEnv
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.envs.factory import make_env
from policytrim_ros.envs.metaworld_config import MetaWorldConfig
from policytrim_ros.execution.config import ExecutionConfig
from policytrim_ros.execution.episode import play_episode
from policytrim_ros.policy.base import PolicyInputError
from policytrim_ros.policy.vla import VLAConfig
from policytrim_ros.policy.vla.modeling_vla import VLAModel
from policytrim_ros.robots.arm import JOINT_NAMES
from policytrim_ros.robots.metaworld import ACTION_NAMES
from policytrim_ros.training.horizon import HorizonSamplingPolicy, collect_horizon_rollout, finish_horizon_rollout
from policytrim_ros.training.lockstep import Started, batch_invariant, run_lockstep
from policytrim_ros.training.rollout import SamplingVLAPolicy, collect_rollout, finish_rollout

H = 16
SMALL = dict(vision_channels=(4, 8, 8), vision_keypoints=4, hidden_size=32, num_layers=1, num_heads=2, chunk_size=H)
ARM = VLAConfig(**SMALL, joint_names=JOINT_NAMES, horizons=(2, 4, 8))
MW = VLAConfig(**SMALL, state_dim=4, action_dim=4, joint_names=ACTION_NAMES, action_offsets=False)
# (task, seed, h, noise seed, step limit): different tasks, initial states, h and lengths in one batch
JOBS = [('reach', 1000, 4, 1, 9), ('push', 1001, 2, 2, 6), ('pick_place', 1002, 8, 3, 12), ('reach', 1003, 3, 4, 5),
        ('push', 1000, 4, 5, 8)]


def make_model(config, log_std=-1.0, horizon_weight=0.0):
    torch.manual_seed(0)
    model = VLAModel(config).eval()
    n = config.action_dim
    model.set_normalization(np.zeros(n), np.ones(n), np.zeros(n), np.full(n, 0.05))
    with torch.no_grad():
        model.log_std_param.fill_(log_std)
        if model.horizon_head is not None:   # a head whose choices depend on the input
            torch.nn.init.normal_(model.horizon_head.net[-1].weight, std=horizon_weight)
    return model


def execution(h, steps, horizon='fixed', control_dt=0.1):
    return ExecutionConfig(H, h, control_dt, steps, horizon=horizon)


class Recorder:
    """``start`` for run_lockstep that records (env slot, job index) per start and every batch size."""

    def __init__(self, envs, model, sample='chunk', control_dt=0.1):
        self.envs, self.model, self.sample, self.control_dt = envs, model, sample, control_dt
        self.starts, self.batches = [], []

    def __call__(self, env, job):
        index, (task, seed, h, noise_seed, steps) = job
        self.starts.append((self.envs.index(env), index))
        generator = torch.Generator().manual_seed(noise_seed)
        if self.sample == 'horizon':
            config = execution(h, steps, 'learned', self.control_dt)
            policy = HorizonSamplingPolicy(self.model, generator, forced=(index % 3,) * (index % 2))
            finish = lambda m, r: finish_horizon_rollout(policy, m, r)   # noqa: E731
        else:
            config = execution(h, steps, control_dt=self.control_dt)
            policy = SamplingVLAPolicy(self.model, generator)
            finish = lambda m, r: finish_rollout(policy, config, m, r, env.instruction)   # noqa: E731
        forward = policy.forward
        policy.forward = lambda *x: self.batches.append(len(x[0])) or forward(*x)
        return Started(play_episode(env, policy.metadata, config, task, seed, f'{task}-{seed}'), policy, finish)


def alone(env, model, job, index, sample='chunk', control_dt=0.1):
    task, seed, h, noise_seed, steps = job
    generator = torch.Generator().manual_seed(noise_seed)
    if sample == 'horizon':
        policy = HorizonSamplingPolicy(model, generator, forced=(index % 3,) * (index % 2))
        return collect_horizon_rollout(env, policy, execution(h, steps, 'learned', control_dt), task, seed)
    return collect_rollout(env, SamplingVLAPolicy(model, generator), execution(h, steps, control_dt=control_dt),
                           task, seed)


def assert_same_outcome(a, b):
    for name in ('success', 'steps', 'inference_calls', 'end_reason', 'episode_id', 'n_action_steps'):
        assert getattr(a.metrics, name) == getattr(b.metrics, name), name


def test_batch_invariant_model_gives_each_row_its_single_sample_output():
    model = make_model(ARM, horizon_weight=1.0)
    g = torch.Generator().manual_seed(0)
    image = torch.randint(0, 256, (5, 96, 96, 3), dtype=torch.uint8, generator=g)
    text, state = torch.randn(5, 384, generator=g), torch.randn(5, 7, generator=g) * 0.3
    with torch.inference_mode():
        single = [model.plan(image[i:i + 1], text[i:i + 1], state[i:i + 1]) for i in range(5)]
        mean, features = batch_invariant(model).plan(image, text, state)
        for i, (m, f) in enumerate(single):
            torch.testing.assert_close(mean[i:i + 1], m, rtol=0, atol=1e-6)
            torch.testing.assert_close(features[i:i + 1], f, rtol=0, atol=1e-6)
        assert torch.equal(model.plan(image[:1], text[:1], state[:1])[0], single[0][0])   # batch 1: unchanged


def test_lockstep_chunk_rollouts_are_the_jobs_alone_in_job_order():
    model = batch_invariant(make_model(ARM))
    envs = [ArmEnv(), ArmEnv()]
    start = Recorder(envs, model)
    batched = run_lockstep(envs, list(enumerate(JOBS)), start)
    plain, env = make_model(ARM), ArmEnv()
    for i, (job, lock) in enumerate(zip(JOBS, batched)):
        one = alone(env, plain, job, i)
        assert_same_outcome(lock, one)
        assert lock.executed.tolist() == one.executed.tolist() and lock.instruction == one.instruction
        np.testing.assert_allclose(lock.chunks, one.chunks, rtol=0, atol=1e-5)
        np.testing.assert_allclose(lock.states, one.states, rtol=0, atol=1e-5)
    # the step limits end the episodes after 3, 3, 2, 2 and 2 calls: both envs end their first jobs
    # in round 3 and take jobs 2 and 3 in env order, the first env ends job 2 first and takes job 4
    assert [r.metrics.inference_calls for r in batched] == [3, 3, 2, 2, 2]
    assert start.starts == [(0, 0), (1, 1), (0, 2), (1, 3), (0, 4)] and start.batches == [2, 2, 2, 2, 2, 1, 1]


def test_finished_envs_take_the_next_job_in_order():
    """Jobs of 3, 1, 2, 1 and 1 calls (h 2, step limits) on two envs, round by round: the second
    env ends job 1 in round 1 and takes job 2; in round 3 both end (jobs 0 and 2) and take 3 and 4
    in env order."""
    model = batch_invariant(make_model(ARM))
    envs = [ArmEnv(), ArmEnv()]
    jobs = [('reach', 1000 + i, 2, i, 2 * calls) for i, calls in enumerate((3, 1, 2, 1, 1))]
    start = Recorder(envs, model)
    results = run_lockstep(envs, list(enumerate(jobs)), start)
    assert [r.metrics.inference_calls for r in results] == [3, 1, 2, 1, 1]
    assert [r.metrics.episode_id for r in results] == [f'reach-{1000 + i}' for i in range(5)]
    assert start.starts == [(0, 0), (1, 1), (1, 2), (0, 3), (1, 4)]
    assert start.batches == [2, 2, 2, 2]


def test_lockstep_horizon_rollouts_keep_each_jobs_choices():
    """Learned h: forced prefixes and draws from each job's generator, windows of different h."""
    model = batch_invariant(make_model(ARM, horizon_weight=3.0))
    envs = [ArmEnv(), ArmEnv(), ArmEnv()]
    start = Recorder(envs, model, 'horizon')
    jobs = [(task, seed, 8, noise, 14) for task, seed, _, noise, _ in JOBS]
    batched = run_lockstep(envs, list(enumerate(jobs)), start)
    assert max(start.batches) == 3
    plain, env = make_model(ARM, horizon_weight=3.0), ArmEnv()
    windows = set()
    for i, (job, lock) in enumerate(zip(jobs, batched)):
        one = alone(env, plain, job, i, 'horizon')
        assert_same_outcome(lock, one)
        assert lock.choices.tolist() == one.choices.tolist()
        np.testing.assert_allclose(lock.features, one.features, rtol=0, atol=1e-5)
        windows.update(lock.choices.tolist())
    assert len(windows) > 1   # the jobs' windows differ: the batches mix episodes of different h


def test_lockstep_meta_world_rollouts_are_the_jobs_alone():
    """Meta-World's renders of one scene differ by up to 2 of 255 between an env's first and later
    renders (llvmpipe; not the physics, which is exact), so the chunks compare to 2e-3 here: far
    below the difference between two jobs' chunks (noise std ~0.02)."""
    envs = [make_env(('push-v3', 'reach-v3'), EnvConfig(), MetaWorldConfig()) for _ in range(2)]
    control_dt = envs[0].control_dt
    model = batch_invariant(make_model(MW))
    jobs = [('push-v3', 1, 4, 1, 10), ('reach-v3', 2, 8, 2, 12), ('push-v3', 3, 2, 3, 6)]
    start = Recorder(envs, model, control_dt=control_dt)
    batched = run_lockstep(envs, list(enumerate(jobs)), start)
    assert start.starts == [(0, 0), (1, 1), (1, 2)] and max(start.batches) == 2   # 3, 2 and 3 calls
    plain = make_model(MW)
    for i, (job, lock) in enumerate(zip(jobs, batched)):
        one = alone(envs[1], plain, job, i, control_dt=control_dt)
        assert_same_outcome(lock, one)
        np.testing.assert_allclose(lock.chunks, one.chunks, rtol=0, atol=2e-3)
    assert np.abs(batched[0].chunks[0] - batched[2].chunks[0]).max() > 2e-2   # the tolerance tells jobs apart
    for env in envs:
        env.close()


def test_an_unusable_observation_ends_only_its_own_episode():
    model = batch_invariant(make_model(ARM))
    envs = [ArmEnv(), ArmEnv()]
    start = Recorder(envs, model)

    def refusing(env, job):
        started = start(env, job)
        if job[0] == 1:
            def encode(observation):
                raise PolicyInputError('no camera')
            started.policy.encode = encode
        return started
    results = run_lockstep(envs, list(enumerate(JOBS[:3])), refusing)
    assert [r.metrics.end_reason for r in results] == ['max_steps', 'error', 'max_steps']
    assert results[1].metrics.inference_calls == 0 and len(results[1].chunks) == 0


@pytest.mark.parametrize('envs_per_worker', [0, -1])
def test_envs_per_worker_must_be_positive(envs_per_worker):
    from policytrim_ros.execution.config import SafetyConfig
    from policytrim_ros.training.workers import RolloutSetup
    with pytest.raises(ValueError, match=rf'envs_per_worker \({envs_per_worker}\) must be >= 1'):
        RolloutSetup(ARM, EnvConfig(), SafetyConfig(), envs_per_worker=envs_per_worker)
