"""horizon divergence: a window is cut once the measured joints leave its planned targets; the
executor's steps, calls and windows against hand-computed episodes."""
import numpy as np
import pytest

from policytrim_ros.config import ConfigError
from policytrim_ros.execution.config import ExecutionConfig
from policytrim_ros.execution.episode import run_episode
from policytrim_ros.execution.executor import ChunkExecutor
from policytrim_ros.policy.base import Observation, PolicyMetadata

NAMES = ('a', 'b')


def config(**kw):
    base = dict(chunk_size=8, n_action_steps=8, control_dt=0.1, max_episode_steps=40, horizon='divergence',
                replan_threshold=(0.1, 0.0), replan_min_steps=2)
    return ExecutionConfig(**{**base, **kw})


def test_a_window_is_cut_only_on_a_watched_joint_past_its_threshold_between_min_steps_and_its_end():
    ex = ChunkExecutor(config(), NAMES)
    ex.start('ep', 'task', 'go', 0.0)
    chunk = np.arange(16.0).reshape(8, 2) / 100
    ex.dispatch(chunk, 0.0, None, 0.0)
    off = chunk.copy()
    off[:, 0] += 0.2                                     # joint a 0.2 off its targets
    assert not ex.diverged(1, off[0])                    # before replan_min_steps
    assert ex.diverged(2, off[1]) and ex.diverged(7, off[6])
    assert not ex.diverged(8, off[7])                    # the window's last step: it ends anyway
    assert not ex.diverged(3, chunk[2] + [0.05, 5.0])    # a under its threshold, b not watched
    fixed = ChunkExecutor(config(horizon='fixed'), NAMES)
    fixed.start('ep', 'task', 'go', 0.0)
    fixed.dispatch(chunk, 0.0, None, 0.0)
    assert not fixed.diverged(3, off[2])


@pytest.mark.parametrize('kw, message', [
    (dict(replan_threshold=()), 'horizon divergence needs replan_threshold'),
    (dict(replan_threshold=(0.1, -1.0)), 'must all be >= 0'),
    (dict(replan_min_steps=9), 'replan_min_steps (9) must be in [1, n_action_steps (8)]'),
    (dict(horizon='adaptive'), "horizon 'adaptive' must be one of"),
])
def test_divergence_settings_are_checked(kw, message):
    with pytest.raises(ValueError) as err:
        config(**kw)
    assert message in str(err.value)


class PushedEnv:
    """Follows each trajectory's knots exactly, except that from ``push_at`` (a global step) on the
    measured joint a sits 0.5 off its target for ``push_for`` steps; succeeds at step ``success_at``."""

    joint_names, cameras, instruction, joint_targets = NAMES, (), 'go', True

    def __init__(self, push_at, push_for, success_at):
        self.push = range(push_at, push_at + push_for)
        self.success_at = success_at

    def reset(self, task, seed, render=True):
        self.steps, self.target, self.window = 0, np.zeros(2), None
        self.windows = []
        return self.observe()

    @property
    def time(self):
        return self.steps * 0.1

    def set_trajectory(self, traj):
        self.window, self.window_step = traj, 0
        self.windows.append([])

    def hold(self):
        self.window = None

    def step(self):
        self.target = self.window.positions[min(self.window_step, len(self.window) - 1)]
        self.window_step += 1
        self.steps += 1
        self.windows[-1].append(self.steps)
        return self.steps >= self.success_at

    def observe(self, render=True):
        measured = self.target + ([0.5, 0.0] if self.steps in self.push else 0.0)
        return Observation(image=np.zeros((0, 0, 3), np.uint8), joint_positions=measured,
                           joint_velocities=np.zeros(2), environment_state=np.zeros(0), instruction='go',
                           time=self.time, step=self.steps)


class Ramp:
    metadata = PolicyMetadata(name='ramp', chunk_size=8, joint_names=NAMES, image_size=None)

    def reset(self):
        pass

    def predict_action_chunk(self, observation):
        return observation.joint_positions + np.linspace(0.01, 0.08, 8)[:, None] * [1.0, 0.0]


def test_an_episode_replans_early_where_the_arm_was_pushed_and_counts_every_step_once():
    env = PushedEnv(push_at=5, push_for=3, success_at=20)
    metrics, records = run_episode(env, Ramp(), config(), 'task', 0)
    # windows: steps 1-5 (pushed at 5: cut), 6-7 (pushed at 6 too, but replan_min_steps is 2: cut
    # at 7), 8-15 (no push: all 8), 16-20 (success at 20)
    assert env.windows == [[1, 2, 3, 4, 5], [6, 7], [8, 9, 10, 11, 12, 13, 14, 15], [16, 17, 18, 19, 20]]
    assert (metrics.success, metrics.steps, metrics.inference_calls) == (True, 20, 4)
    assert [(r.first_step, r.n_action_steps) for r in records] == [(0, 8), (5, 8), (7, 8), (15, 8)]


def test_without_a_push_divergence_runs_the_whole_window():
    env = PushedEnv(push_at=100, push_for=0, success_at=20)
    metrics, _ = run_episode(env, Ramp(), config(), 'task', 0)
    assert (metrics.steps, metrics.inference_calls) == (20, 3) and env.windows[0] == list(range(1, 9))


def test_divergence_needs_joint_targets():
    env = PushedEnv(push_at=5, push_for=2, success_at=20)
    env.joint_targets = False
    with pytest.raises(ConfigError, match='actions are not joint targets'):
        run_episode(env, Ramp(), config(), 'task', 0)
