"""Meta-World's bundled scripted experts as a ``ChunkPolicy`` that plans H actions ahead.

The experts are Meta-World's own, one per task: ``metaworld.policies.ENV_POLICY_MAP`` maps each of
the 50 v3 task names to its ``Sawyer<Name>V3Policy`` class (peg-insert-side-v3's is
``SawyerPegInsertionSideV3Policy``). They are feedback laws: action = f(current obs). To turn one
into an open-loop chunk, ``MetaWorldExpertPolicy`` copies the observed physics state
(``Observation.environment_state``, see ``MetaWorldEnv``) into a private Meta-World env of the
task and rolls the expert forward there for H steps: row k is the expert's action for the state
the private simulation reaches after rows 0..k-1. For ``fixture`` tasks (doors, drawers, button
boxes, ...) the private env is first reset to the observed variant's rand_vec (the end of
``environment_state``), which places the fixture where the observed scene has it. The private
env has the nominal object friction and mass and no noise, so a chunk is exactly what the closed
loop would do in an undisturbed world, and drifts from it under disturbances, as a real planner's
would. An H = 16 chunk costs 16 physics steps without Meta-World's reward code: about 5-10 ms on 2
CPU cores. ``MetaWorldSuiteExpertPolicy`` serves every task from one policy (the ``expert``
backend of sweeps), and ``MetaWorldStepExpert`` is the per-step expert of demonstration operators.
"""
from __future__ import annotations

import warnings

import mujoco
import numpy as np
from metaworld.policies import ENV_POLICY_MAP

from policytrim_ros.policy.base import Observation, PolicyInputError, PolicyMetadata
from policytrim_ros.robots.metaworld import (ACTION_NAMES, METAWORLD_TASKS, MW_OBS_DIM, STATE_SPEC, check_task,
                                             make_metaworld_env)


def expert_action(expert, mw_obs: np.ndarray) -> np.ndarray:
    """(4,) float64 action of a Meta-World scripted ``expert`` for the (39,) observation, in [-1, 1]."""
    with warnings.catch_warnings():
        # move() warns whenever its proportional response exceeds 1; the env clips it anyway
        warnings.filterwarnings('ignore', message=r'Constant\(s\) may be too high')
        action = expert.get_action(mw_obs)
    return np.clip(np.asarray(action, dtype=np.float64), -1.0, 1.0)


class MetaWorldExpertPolicy:
    """Meta-World's scripted expert for ``task``, emitting (H, 4) action chunks.

    With ``chunk_size`` 1 it is the plain step-wise expert (no private simulation), e.g. for
    demonstrations; otherwise each chunk is planned on a private copy of the observed state. It
    reads ``environment_state``, hence ``uses_environment_state``.
    """

    def __init__(self, task: str, chunk_size: int) -> None:
        if chunk_size < 1:
            raise ValueError(f'chunk_size ({chunk_size}) must be >= 1')
        self.task = task
        spec = check_task(task)
        self.instruction = spec.instruction
        self.metadata = PolicyMetadata(name='metaworld-expert', chunk_size=chunk_size,
                                       joint_names=ACTION_NAMES, image_size=None,
                                       uses_environment_state=True)
        self._expert = ENV_POLICY_MAP[task]()
        # Any variant will do: every chunk overwrites its physics state and goal.
        self._sim = make_metaworld_env(task) if chunk_size > 1 else None
        self._state_size = None if self._sim is None else mujoco.mj_stateSize(self._sim.model, STATE_SPEC)
        # fixture tasks: the rand_vec that places the fixture ends environment_state (R = 3 or 6)
        self._layout_size = len(self._sim._last_rand_vec) if self._sim is not None and spec.fixture else 0

    def reset(self) -> None:
        """The expert is stateless: every chunk is planned from the observation alone."""

    def predict_action_chunk(self, observation: Observation) -> np.ndarray:
        """(H, 4) actions: the expert's now, then its actions along the private rollout.

        Raises PolicyInputError for another task's instruction or a malformed environment_state.
        """
        if observation.instruction != self.instruction:
            raise PolicyInputError(f'the {self.task} expert expects the instruction {self.instruction!r}, '
                                   f'got {observation.instruction!r}')
        state = np.asarray(observation.environment_state, dtype=np.float64)
        if self._sim is None:
            valid, wanted = state.ndim == 1 and len(state) >= MW_OBS_DIM, f'(>= {MW_OBS_DIM},)'
        else:
            size = MW_OBS_DIM + self._state_size + self._layout_size
            valid, wanted = state.shape == (size,), f'({size},)'
        if not valid:
            raise PolicyInputError(f'environment_state must be the {wanted} vector of MetaWorldEnv '
                                   f'(Meta-World observation + physics state), got shape {state.shape}')
        mw_obs = state[:MW_OBS_DIM]
        chunk = np.empty((self.metadata.chunk_size, len(ACTION_NAMES)))
        chunk[0] = expert_action(self._expert, mw_obs)
        if self._sim is None:
            return chunk
        sim = self._sim
        if self._layout_size:
            layout = state[-self._layout_size:]
            if not np.array_equal(layout, sim._last_rand_vec):  # another variant: move the fixture there
                sim._last_rand_vec = layout.copy()
                sim.reset()  # Meta-World's reset places the fixture at the frozen rand_vec
        mujoco.mj_setState(sim.model, sim.data, state[MW_OBS_DIM:MW_OBS_DIM + self._state_size], STATE_SPEC)
        sim._target_pos = mw_obs[-3:].copy()  # the goal, read by _get_obs()
        sim._prev_obs = mw_obs[:18].copy()    # the frame stack _get_obs() shifts
        for k in range(1, len(chunk)):
            # Meta-World's step() without the reward bookkeeping: mocap delta, gripper, physics.
            sim.set_xyz_action(chunk[k - 1, :3])
            sim.do_simulation([chunk[k - 1, 3], -chunk[k - 1, 3]], n_frames=sim.frame_skip)
            mujoco.mj_forward(sim.model, sim.data)
            obs = np.clip(sim._get_obs(), sim.sawyer_observation_space.low, sim.sawyer_observation_space.high)
            chunk[k] = expert_action(self._expert, obs)
        return chunk


class MetaWorldSuiteExpertPolicy:
    """The experts of all 50 Meta-World tasks behind one ``ChunkPolicy``, emitting (H, 4).

    The task is recognised from the instruction, as ``ScriptedExpertPolicy`` does on the arm; each
    task's ``MetaWorldExpertPolicy`` is built on first use (its private env takes ~0.6 s).
    """

    def __init__(self, chunk_size: int) -> None:
        if chunk_size < 1:
            raise ValueError(f'chunk_size ({chunk_size}) must be >= 1')
        self.metadata = PolicyMetadata(name='metaworld-expert', chunk_size=chunk_size,
                                       joint_names=ACTION_NAMES, image_size=None,
                                       uses_environment_state=True)
        self._tasks = {spec.instruction: task for task, spec in METAWORLD_TASKS.items()}
        self._experts: dict[str, MetaWorldExpertPolicy] = {}

    def reset(self) -> None:
        """The experts are stateless."""

    def predict_action_chunk(self, observation: Observation) -> np.ndarray:
        """(H, 4) actions of the instructed task's expert; PolicyInputError for an unknown instruction."""
        task = self._tasks.get(observation.instruction)
        if task is None:
            raise PolicyInputError(f'the Meta-World experts know the instructions {list(self._tasks)}; '
                                   f'got {observation.instruction!r}')
        if task not in self._experts:
            self._experts[task] = MetaWorldExpertPolicy(task, self.metadata.chunk_size)
        return self._experts[task].predict_action_chunk(observation)


class MetaWorldStepExpert:
    """Each task's step-wise expert as a demonstration operator's ``StepExpert``: (4,) per step.

    Meta-World's experts are feedback laws on the true state (``environment_state``), so
    ``control_dt`` is not needed.
    """

    def __init__(self) -> None:
        self._experts: dict[str, MetaWorldExpertPolicy] = {}

    def __call__(self, task: str, observation: Observation, control_dt: float) -> np.ndarray:
        """(4,) hand motion (cm per step) and gripper effort, in [-1, 1]."""
        if task not in self._experts:
            self._experts[task] = MetaWorldExpertPolicy(task, chunk_size=1)
        return self._experts[task].predict_action_chunk(observation)[0]
