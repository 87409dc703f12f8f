"""``MetaWorldEnv``: the 50 Meta-World 3.1.1 tasks behind the ``ArmEnv`` surface that ``run_episode`` uses.

Meta-World is commanded per control step with a 4-d action in [-1, 1]: a delta of the hand's mocap
target (1 unit = 1 cm per step) and a gripper effort (-1 open, +1 close). A chunk's executed window
arrives as a ``TimedTrajectory`` whose k-th knot is the k-th action (at ``(k+1) * control_dt``);
after the window the env holds (zero xyz motion, last gripper effort). Disturbances mirror the
embedded arm's and use the same ``DisturbanceConfig`` fields in Meta-World units (see
``MetaWorldDisturbanceConfig``); every random stream comes from the episode seed. The object-side
ones (layout offset, object friction and mass, kicks) act on the tasks that name a ``randomized``
spot in ``robots.metaworld_tasks`` (reach-v3, push-v3, pick-place-v3); the hand-side ones on all.
"""
from __future__ import annotations

import math
import pickle
from dataclasses import dataclass
from typing import Any

import metaworld
import mujoco
import numpy as np

from policytrim_ros.envs.metaworld_config import WORKSPACE_VIEW, MetaWorldConfig
from policytrim_ros.envs.rendering import OffscreenRenderer, add_pixel_noise
from policytrim_ros.envs.streams import episode_rngs, sensor_rng
from policytrim_ros.policy.base import Observation
from policytrim_ros.robots.metaworld import (ACTION_NAMES, MW_OBS_DIM, STATE_SPEC, MetaWorldTask, check_task,
                                             make_metaworld_env, mt1_variants)
from policytrim_ros.trajectory import TimedTrajectory, TrajectoryError, validate_trajectory

N_VARIANTS = 50
"""Task variants (object and goal spots) per MT1 benchmark."""
_MIN_OBJECT_GOAL_DISTANCE = 0.15  # m in xy: Meta-World's reset loops forever on closer spots
_RESTING_HEIGHT_TOLERANCE = 0.005  # m above its initial height: the object still lies on the table
# Kicks only happen with the fingers this far (m) from the object: a puck kicked into the fingers
# can tip over, which no expert recovers from.
_KICK_CLEARANCE = 0.06
_TABLE_CENTRE_XY = np.array([0.0, 0.7])  # m: kicks point within +-90 deg of this direction


def _workspace_camera() -> mujoco.MjvCamera:
    """The ``workspace`` view (``WORKSPACE_VIEW``) as a free MuJoCo camera."""
    camera = mujoco.MjvCamera()
    camera.type = mujoco.mjtCamera.mjCAMERA_FREE
    camera.lookat[:] = WORKSPACE_VIEW['lookat']
    camera.distance, camera.azimuth, camera.elevation = (WORKSPACE_VIEW[k] for k in ('distance', 'azimuth', 'elevation'))
    return camera


@dataclass
class _Object:
    """The body of ``objGeom`` that the object-side disturbances act on, and its nominal physics."""

    body: int
    dof: int
    nominal_friction: float
    nominal_mass: float
    nominal_inertia: np.ndarray


@dataclass
class _Loaded:
    """One task's Meta-World env and its renderer (its GL context is created on the first render).

    ``object`` is None for the tasks without object-side disturbances.
    """

    env: Any
    spec: MetaWorldTask
    object: _Object | None
    renderer: OffscreenRenderer


class MetaWorldEnv:
    """A Meta-World task with the ``ArmEnv`` surface: timed windows of actions, seeded disturbances.

    ``joint_names`` are the action columns ``ACTION_NAMES``; ``control_dt`` is Meta-World's
    frame_skip * timestep (``CONTROL_DT``, 0.0125 s). Observations: ``joint_positions`` (4,) hand
    xyz (m) and gripper opening (0-1) with sensor noise; ``joint_velocities`` (4,) their true rates (per s);
    ``environment_state`` (39 + S + R,) privileged, for the scripted expert only: Meta-World's
    observation, then ``mj_getState(STATE_SPEC)`` (S = 39 to 61 depending on the scene; 55 for
    reach-v3, push-v3 and pick-place-v3), then for ``fixture`` tasks the variant's rand_vec (R = 3
    or 6; else R = 0). One Meta-World env per task is created on first use; ``reset`` may switch tasks.
    """

    joint_targets = False   # actions are end-effector deltas, not targets for joint_positions

    def __init__(self, task: str, config: MetaWorldConfig | None = None) -> None:
        self.config = config if config is not None else MetaWorldConfig()
        # what the renderer is pointed at: our free camera, or a named camera of the scene
        self._camera = _workspace_camera() if self.config.camera == 'workspace' else self.config.camera
        self.joint_names = ACTION_NAMES
        self._loaded: dict[str, _Loaded] = {}
        first = self._load(task)
        self.control_dt = float(first.env.frame_skip * first.env.model.opt.timestep)
        self.task = ''
        self.instruction = ''
        self.step_count = 0
        self._seed = 0
        self._rng: dict[str, np.random.Generator] = {}
        self._obs = np.zeros(MW_OBS_DIM)
        self._info: dict = {}
        self._noise = np.zeros(3)
        self._grip = -1.0  # Meta-World resets with the gripper driven open
        self._active: tuple[np.ndarray, int] | None = None  # (actions (N, 4), start step)
        self._pending: tuple[np.ndarray, int] | None = None
        self._upside_down = False

    def _load(self, task: str) -> _Loaded:
        """The task's env, created on first use; raises UnknownTaskError for an unknown task."""
        if task not in self._loaded:
            spec = check_task(task)
            env = make_metaworld_env(task, self.config.benchmark_seed,
                                     max_path_length=self.config.max_path_length)
            m = env.model
            if mujoco.mj_name2id(m, mujoco.mjtObj.mjOBJ_SITE, 'goal') >= 0:  # 32 of the 50 scenes have one
                m.site_size[m.site('goal').id] = self.config.goal_marker_radius   # drawn only: sites have no physics
            obj = None
            if spec.randomized is not None:
                body = int(m.geom('objGeom').bodyid[0])
                obj = _Object(body, int(m.jnt_dofadr[m.body_jntadr[body]]), float(m.geom('objGeom').friction[0]),
                              float(m.body_mass[body]), m.body_inertia[body].copy())
            self._loaded[task] = _Loaded(env, spec, obj, OffscreenRenderer(m, self.config.image_height,
                                                                           self.config.image_width))
        return self._loaded[task]

    @property
    def _current(self) -> _Loaded:
        if not self.task:
            raise RuntimeError('call reset(task, seed) first')
        return self._loaded[self.task]

    # ----------------------------------------------------------------- episode
    def reset(self, task: str, seed: int, render: bool = True) -> Observation:
        """Start an episode: MT1 variant ``seed % 50``, then the seeded disturbances on top.

        Raises UnknownTaskError (with the closest task names) for an unknown task.
        """
        loaded = self._load(task)
        self.task, self.instruction = task, loaded.spec.instruction
        self._seed = int(seed)
        self._rng = episode_rngs(self._seed)
        data = dict(mt1_variants(task, self.config.benchmark_seed)[1][self._seed % N_VARIANTS])
        if loaded.object is not None:
            self._randomize_physics(loaded.env, loaded.object, self._rng['physics'])
            data['rand_vec'] = self._shift_spot(loaded, data['rand_vec'], self._rng['layout'])
        loaded.env.set_task(metaworld.Task(env_name=task, data=pickle.dumps(data)))
        self._obs, _ = loaded.env.reset()
        self._info = {}
        if self.config.camera == 'workspace':
            self._upside_down = False
        else:
            cam = loaded.env.model.camera(self.config.camera).id
            self._upside_down = bool(loaded.env.data.cam_xmat[cam, 7] < 0)  # image "up" points down
        self.step_count = 0
        self._grip = -1.0
        self._active, self._pending = None, None
        self._noise = self.config.disturbances.actuation_noise_std * self._rng['actuation'].standard_normal(3)
        return self.observe(render=render)

    def _shift_spot(self, loaded: _Loaded, rand_vec: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """The variant's rand_vec with the task's object (or goal) xy moved by the layout noise.

        The moved spot is clipped to Meta-World's own sampling range (the observation clips goals
        to it, so an expert would aim at the wrong spot beyond). Offsets that bring object and
        goal within 0.15 m are redrawn (Meta-World's reset would loop forever on them).
        """
        half = self.config.disturbances.object_position_range
        i = 0 if loaded.spec.randomized == 'object' else 3
        space = loaded.env._random_reset_space  # (object xyz, goal xyz) bounds of the variants
        for _ in range(100):
            shifted = np.array(rand_vec, dtype=np.float64)
            shifted[i:i + 2] = np.clip(shifted[i:i + 2] + rng.uniform(-half, half, size=2),
                                       space.low[i:i + 2], space.high[i:i + 2])
            if np.linalg.norm(shifted[0:2] - shifted[3:5]) >= _MIN_OBJECT_GOAL_DISTANCE:
                return shifted
        raise RuntimeError(f'no layout offset within {half} m keeps object and goal '
                           f'{_MIN_OBJECT_GOAL_DISTANCE} m apart (rand_vec {rand_vec.tolist()})')

    def _randomize_physics(self, env: Any, obj: _Object, rng: np.random.Generator) -> None:
        """Scale the object's friction and mass (from their nominal values) by seeded factors."""
        d = self.config.disturbances
        m = env.model
        m.geom('objGeom').friction[0] = obj.nominal_friction * rng.uniform(*d.friction_scale_range)
        mass_scale = rng.uniform(*d.mass_scale_range)
        m.body_mass[obj.body] = obj.nominal_mass * mass_scale
        m.body_inertia[obj.body] = obj.nominal_inertia * mass_scale
        mujoco.mj_setConst(m, env.data)  # refresh quantities derived from the masses

    def close(self) -> None:
        """Free the renderers (GL contexts) and the Meta-World envs."""
        for loaded in self._loaded.values():
            loaded.renderer.close()
            loaded.env.close()
        self._loaded.clear()
        self.task = ''

    # ----------------------------------------------------------------- commands
    def set_trajectory(self, traj: TimedTrajectory) -> None:
        """Execute ``traj``'s actions, replacing whatever remains of the current window.

        Knot k (at ``(k+1) * control_dt``) is the action applied during the k-th step after the
        start; velocities are ignored; values are clipped to [-1, 1] like Meta-World's action
        space. ``start_time`` None starts now, a future one waits (the current window keeps
        running), a past one skips the actions already due. Raises TrajectoryError (changing
        nothing) on wrong names, NaN/inf, or knots off the control grid.
        """
        checked = validate_trajectory(traj, self.joint_names)
        grid = self.control_dt * np.arange(1, len(checked) + 1)
        if not np.allclose(checked.times_from_start, grid, rtol=0.0, atol=0.01 * self.control_dt):
            raise TrajectoryError(f'knot k must be at (k+1) * control_dt ({self.control_dt} s): got '
                                  f'{checked.times_from_start.tolist()}')
        start = self.step_count if checked.start_time is None else round(checked.start_time / self.control_dt)
        actions = np.clip(checked.positions, -1.0, 1.0)
        if start > self.step_count:
            self._pending = (actions, start)
        else:
            self._active, self._pending = (actions, start), None

    def hold(self) -> None:
        """Drop any window: zero xyz motion from now on, gripper effort unchanged."""
        self._active, self._pending = None, None

    @property
    def trajectory_active(self) -> bool:
        """Whether a window still has actions ahead (including one waiting for its start)."""
        if self._pending is not None:
            return True
        return self._active is not None and self.step_count - self._active[1] < len(self._active[0])

    def _next_action(self) -> np.ndarray:
        """(4,) the window's action for this step, or the hold action."""
        if self._pending is not None and self.step_count >= self._pending[1]:
            self._active, self._pending = self._pending, None
        if self._active is not None:
            actions, start = self._active
            k = self.step_count - start
            if k < len(actions):
                return actions[k]
            self._active = None
        return np.array([0.0, 0.0, 0.0, self._grip])

    def step(self) -> bool:
        """Apply one action (plus AR(1) xyz noise, maybe a kick); return ``info['success']``."""
        loaded = self._current
        if self.step_count >= self.config.max_path_length:
            raise RuntimeError(f'the episode reached max_path_length ({self.config.max_path_length}) '
                               'steps; call reset()')
        action = self._next_action()
        self._grip = float(action[3])
        d = self.config.disturbances
        c = d.actuation_noise_correlation
        self._noise = c * self._noise + math.sqrt(1.0 - c * c) * d.actuation_noise_std * \
            self._rng['actuation'].standard_normal(3)
        if loaded.object is not None:
            self._maybe_kick_object(loaded.env, loaded.object)
        command = np.r_[np.clip(action[:3] + self._noise, -1.0, 1.0), self._grip]
        self._obs, _, _, _, info = loaded.env.step(command)
        self._info = info
        self.step_count += 1
        return bool(info['success'])

    def end_state(self) -> dict[str, float | bool | str]:
        """Meta-World's own measures after the last step (``obj_to_target`` in m, ``near_object``,
        ``grasp_success``), plus ``failure_mode`` when it is not solved: its tasks name no modes,
        so it says only whether the object was in the gripper at the end."""
        if not self._info:
            return {}
        state = {'obj_to_target': round(float(self._info['obj_to_target']), 3),
                 'near_object': bool(self._info['near_object']), 'grasp_success': bool(self._info['grasp_success'])}
        if not self._info['success']:
            state['failure_mode'] = 'off_target_grasped' if state['grasp_success'] else 'off_target'
        return state

    def _maybe_kick_object(self, env: Any, obj: _Object) -> None:
        """With the configured probability, kick the object if it rests on the table, fingers away.

        The direction is uniform within +-90 deg of the direction to the table centre, so the
        object stays reachable.
        """
        d = self.config.disturbances
        rng = self._rng['perturbation']
        draw, offset = rng.random(), rng.uniform(-np.pi / 2, np.pi / 2)  # always drawn: stable streams
        if draw >= d.perturbation_probability:
            return
        position = env.data.xpos[obj.body]
        lifted = position[2] > env.obj_init_pos[2] + _RESTING_HEIGHT_TOLERANCE
        if lifted or np.linalg.norm(env.tcp_center - position) < _KICK_CLEARANCE:
            return
        to_centre = _TABLE_CENTRE_XY - position[:2]
        angle = np.arctan2(to_centre[1], to_centre[0]) + offset
        v = obj.dof
        env.data.qvel[v:v + 2] = d.perturbation_velocity * np.array([np.cos(angle), np.sin(angle)])

    # ----------------------------------------------------------------- sensing
    def observe(self, render: bool = True) -> Observation:
        """The current observation; ``render=False`` returns a zero image and skips the GL work.

        Sensor noise depends on (seed, step) only: observing more or less often changes nothing.
        """
        loaded = self._current
        d = self.config.disturbances
        noise = sensor_rng(self._seed, 'proprioception', self.step_count).standard_normal(4)
        noise *= np.array([d.joint_noise_std] * 3 + [d.gripper_noise_std])
        state = np.empty(mujoco.mj_stateSize(loaded.env.model, STATE_SPEC))
        mujoco.mj_getState(loaded.env.model, loaded.env.data, state, STATE_SPEC)
        layout = [np.asarray(loaded.env._last_rand_vec, dtype=np.float64)] if loaded.spec.fixture else []
        if render:
            image = self._render(loaded)
        else:
            image = np.zeros((self.config.image_height, self.config.image_width, 3), np.uint8)
        return Observation(
            image=image,
            joint_positions=self._obs[:4] + noise,
            joint_velocities=(self._obs[:4] - self._obs[18:22]) / self.control_dt,
            environment_state=np.concatenate([self._obs, state, *layout]),
            instruction=self.instruction,
            time=self.time,
            step=self.step_count,
        )

    def _render(self, loaded: _Loaded) -> np.ndarray:
        """(H, W, 3) uint8 RGB from the configured camera, upright, plus the configured pixel noise."""
        image = loaded.renderer.render(loaded.env.data, [self._camera])[0]
        if self._upside_down:
            image = np.ascontiguousarray(image[::-1, ::-1])  # a 180 deg roll, not a mirror
        std = self.config.disturbances.image_noise_std
        if std > 0.0:
            image = add_pixel_noise(image, std, sensor_rng(self._seed, 'image', self.step_count))
        return image

    @property
    def cameras(self) -> tuple[str, ...]:
        """The camera the images come from (one: Meta-World renders a single view)."""
        return (self.config.camera,)

    @property
    def time(self) -> float:
        """Simulated seconds since reset (``step_count * control_dt``)."""
        return self.step_count * self.control_dt
