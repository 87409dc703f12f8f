"""``ArmEnv``: the embedded MuJoCo arm, commanded with timed joint trajectories like a JTC.

The arm follows ``TimedTrajectory`` messages with joint_trajectory_controller semantics
(``envs.follower``: validate and reject whole, replace the remaining trajectory, deferred start
times, smooth takeover from the commanded state, hold the last knot); its cameras render offscreen
(``envs.rendering``). Disturbances come from ``EnvConfig.disturbances`` and every random stream
is spawned from the episode seed, so a seed plus a command sequence replays bit for bit. No ROS
imports here: ``nodes/sim_node.py`` wraps this class.
"""
from __future__ import annotations

import mujoco
import numpy as np

from policytrim_ros.envs.base import WORKSPACE_HIGH, WORKSPACE_LOW, Task
from policytrim_ros.envs.config import EnvConfig
from policytrim_ros.envs.follower import TrajectoryFollower
from policytrim_ros.envs.registry import make_task
from policytrim_ros.envs.rendering import OffscreenRenderer, add_pixel_noise
from policytrim_ros.envs.streams import episode_rngs, sensor_rng
from policytrim_ros.policy.base import Observation
from policytrim_ros.robots.arm import ARM_JOINT_NAMES, JOINT_NAMES, SCENE_PATH
from policytrim_ros.trajectory import TimedTrajectory

SETTLE_TIME = 0.3
"""Seconds of physics run at reset, holding the home pose, so the cube comes to rest."""
_RESTING_HEIGHT_TOLERANCE = 0.005  # m above its resting height: the cube still lies on the table
_RESTING_SPEED = 0.05  # m/s: slower than this, a cube on the table counts as at rest


class ArmEnv:
    """6-DoF arm + parallel gripper on a table with a cube, a goal marker and cameras (two fixed, one
    on the hand).

    Commands are absolute joint targets for ``joint_names`` (A = 7: six arm joints in rad, then the
    opening of each finger in m), sent as timed trajectories; ``step()`` advances one control
    period of ``config.control_dt`` seconds. Call ``reset`` before anything else.
    """

    joint_targets = True    # actions are absolute targets for joint_positions

    def __init__(self, config: EnvConfig | None = None) -> None:
        self.config = config if config is not None else EnvConfig()
        self.model = mujoco.MjModel.from_xml_path(str(SCENE_PATH))
        self.model.opt.timestep = self.config.physics_dt
        self.data = mujoco.MjData(self.model)
        self.joint_names: tuple[str, ...] = JOINT_NAMES
        self.control_dt = self.config.control_dt
        m = self.model
        cameras = [m.camera(i).name for i in range(m.ncam)]
        unknown = [c for c in self.config.cameras if c not in cameras]
        if unknown:
            raise ValueError(f'cameras {unknown} are not in the scene (it has {cameras})')
        joints = [m.joint(n) for n in ARM_JOINT_NAMES + ('finger_left',)]  # gripper = left finger
        self._qpos_adr = np.array([j.qposadr[0] for j in joints])
        self._dof_adr = np.array([j.dofadr[0] for j in joints])
        self._lower = np.array([j.range[0] for j in joints])
        self._upper = np.array([j.range[1] for j in joints])
        self._actuators = np.array([m.actuator(n).id for n in JOINT_NAMES])
        # Position actuators give kp*(u - q) - kv*qdot; the target u = p + (kv/kp)*v makes that
        # kp*(p - q) + kv*(v - qdot), i.e. PD tracking of the trajectory's position AND velocity.
        self._velocity_feedforward = (m.actuator_biasprm[self._actuators, 2]
                                      / m.actuator_biasprm[self._actuators, 1])
        self._home = m.key('home').id
        self._cube_body = m.body('cube').id
        self._cube_qpos = m.joint('cube').qposadr[0]
        self._cube_dof = m.joint('cube').dofadr[0]
        self._cube_geom = m.geom('cube').id
        self.cube_half_size = float(m.geom_size[self._cube_geom, 2])
        self._finger_geoms = (m.geom('finger_left').id, m.geom('finger_right').id)
        self._ee_site = m.site('ee_site').id
        self._goal_mocap = m.body('goal').mocapid[0]
        self._goal_geoms = {'sphere': (m.geom('goal_sphere').id, m.geom('goal_stand').id),
                            'disc': (m.geom('goal_disc').id,)}
        self._goal_stand = m.geom('goal_stand').id
        self._goal_alpha = {g: float(m.geom_rgba[g, 3]) for gs in self._goal_geoms.values() for g in gs}
        self._nominal_friction = float(m.geom_friction[self._cube_geom, 0])
        self._nominal_mass = float(m.body_mass[self._cube_body])
        self._nominal_inertia = m.body_inertia[self._cube_body].copy()
        self._renderer = OffscreenRenderer(m, self.config.image_height, self.config.image_width,
                                           close_at_exit=True)
        # Times closer than half a physics step are the same instant: physics time accumulates
        # float error, and ROS stamps have ns resolution.
        self._follower = TrajectoryFollower(JOINT_NAMES, time_tolerance=0.5 * self.config.physics_dt)
        self.task: Task | None = None
        self.cube_was_grasped = False
        """Whether both fingers have touched the cube at some step of this episode."""
        self.cube_max_lift = 0.0
        """The highest the cube's bottom has been above the table in this episode (m)."""
        self.instruction = ''
        self.step_count = 0
        self._seed = 0
        self._rng: dict[str, np.random.Generator] = {}
        self._noise = np.zeros(len(ARM_JOINT_NAMES))

    # ----------------------------------------------------------------- episode
    def reset(self, task: str, seed: int, render: bool = True) -> Observation:
        """Start an episode of ``task``: home pose, gripper open, layout and physics from ``seed``.

        The physics then runs ``SETTLE_TIME`` with the arm holding, so the cube rests; time and
        step count start at 0 afterwards. Raises UnknownTaskError (from the registry) for an unknown task.
        """
        self.task = make_task(task)
        self.instruction = self.task.instruction
        self._seed = seed
        self._rng = episode_rngs(self._seed)
        self._randomize_physics(self._rng['physics'])
        mujoco.mj_resetDataKeyframe(self.model, self.data, self._home)
        self.task.initialize(self, self._rng['layout'])
        self._follower.reset(self.data.qpos[self._qpos_adr].copy())
        self._noise = (self.config.disturbances.actuation_noise_std
                       * self._rng['actuation'].standard_normal(len(ARM_JOINT_NAMES)))
        self.data.ctrl[self._actuators] = self._follower.position
        for _ in range(round(SETTLE_TIME / self.config.physics_dt)):
            mujoco.mj_step(self.model, self.data)
        self.data.time = 0.0
        self.step_count = 0
        mujoco.mj_forward(self.model, self.data)
        self.cube_was_grasped = self.cube_grasped
        self.cube_max_lift = self.cube_lift
        return self.observe(render=render)

    def _randomize_physics(self, rng: np.random.Generator) -> None:
        """Scale the cube's friction and mass (from their nominal values) by seeded factors."""
        d = self.config.disturbances
        m = self.model
        m.geom_friction[self._cube_geom, 0] = self._nominal_friction * rng.uniform(*d.friction_scale_range)
        mass_scale = rng.uniform(*d.mass_scale_range)
        m.body_mass[self._cube_body] = self._nominal_mass * mass_scale
        m.body_inertia[self._cube_body] = self._nominal_inertia * mass_scale
        mujoco.mj_setConst(m, self.data)  # refresh quantities derived from the masses

    def close(self) -> None:
        """Free the renderer (the GL context)."""
        self._renderer.close()

    # ----------------------------------------------------------------- commands
    def set_trajectory(self, traj: TimedTrajectory) -> None:
        """Execute ``traj`` (JTC semantics), replacing whatever remains of the current one.

        ``start_time`` None starts it now; a future ``start_time`` (env seconds) keeps executing
        the current command until then; a past one starts it now, sampled as if it had started
        then (start times within half a physics step of now count as now). The segment before
        the first knot starts from the commanded position and velocity at takeover. Raises
        TrajectoryError on a malformed trajectory and then changes nothing (the arm keeps its
        current command).
        """
        self._follower.follow(traj, self.time)

    def hold(self) -> None:
        """Drop any trajectory and hold the commanded position, at zero velocity."""
        self._follower.hold()

    @property
    def commanded_position(self) -> np.ndarray:
        """The position the trajectory follower commands now (a JTC's desired state)."""
        return self._follower.position.copy()

    @property
    def trajectory_active(self) -> bool:
        """Whether a trajectory still has knots ahead (including one waiting for its start)."""
        return self._follower.active(self.time)

    def step(self) -> bool:
        """Advance one control period; return whether the task is solved afterwards.

        Per control step: one AR(1) update of the actuation noise and maybe a kick to the cube.
        Per physics substep: the trajectory is sampled, noise added to the arm targets, targets
        clipped to the joint ranges, velocity feedforward applied; all substeps' targets are
        computed in one numpy pass before the physics runs (the same floats as one by one).
        """
        self._require_reset('step')
        d = self.config.disturbances
        c = d.actuation_noise_correlation
        self._noise = c * self._noise + np.sqrt(1.0 - c * c) * d.actuation_noise_std * \
            self._rng['actuation'].standard_normal(len(ARM_JOINT_NAMES))
        self._maybe_kick_cube()
        for ctrl in self._substep_controls():
            self.data.ctrl[self._actuators] = ctrl
            mujoco.mj_step(self.model, self.data)
        mujoco.mj_forward(self.model, self.data)  # kinematics and contacts of the final state
        self.step_count += 1
        self.cube_was_grasped = self.cube_was_grasped or self.cube_grasped
        self.cube_max_lift = max(self.cube_max_lift, self.cube_lift)
        return self.task.is_success(self)

    def _substep_controls(self) -> np.ndarray:
        """(S, A) actuator controls of the S = ``config.substeps`` physics steps of this control step.

        Substep i runs at data.time after i physics steps; the times are accumulated one timestep at
        a time, the way mj_step advances data.time, so they are the same floats.
        """
        dt = self.model.opt.timestep
        times = np.add.accumulate(np.r_[self.data.time, np.full(self.config.substeps - 1, dt)])
        positions, velocities = self._follower.advance(times)
        positions[:, :len(ARM_JOINT_NAMES)] += self._noise
        return np.clip(positions, self._lower, self._upper) + self._velocity_feedforward * velocities

    def end_state(self) -> dict[str, float | bool | str]:
        """The task's ``end_state`` measures, plus its ``failure_mode`` when it is not solved."""
        self._require_reset('end_state')
        state = self.task.end_state(self)
        if not self.task.is_success(self):
            state['failure_mode'] = self.task.failure_mode(state)
        return state

    def _require_reset(self, method: str) -> None:
        if self.task is None:
            raise RuntimeError(f'call reset(task, seed) before {method}()')

    def _maybe_kick_cube(self) -> None:
        """With the configured probability, kick a cube that lies on the table and is not grasped.

        The direction is uniform within +-90 deg of the direction to the workspace centre, so kicks
        never drive the cube off the reachable part of the table.
        """
        d = self.config.disturbances
        rng = self._rng['perturbation']
        draw, offset = rng.random(), rng.uniform(-np.pi / 2, np.pi / 2)  # always drawn: stable streams
        position = self.cube_position
        on_table = position[2] < self.cube_half_size + _RESTING_HEIGHT_TOLERANCE
        if draw < d.perturbation_probability and on_table and not self.cube_grasped:
            to_centre = (WORKSPACE_LOW + WORKSPACE_HIGH) / 2 - position[:2]
            angle = np.arctan2(to_centre[1], to_centre[0]) + offset
            v = self._cube_dof
            self.data.qvel[v:v + 2] = d.perturbation_velocity * np.array([np.cos(angle), np.sin(angle)])

    # ----------------------------------------------------------------- sensing
    def observe(self, render: bool = True) -> Observation:
        """The current observation; ``render=False`` returns a zero image and skips the GL work.

        Sensor noise is drawn once per control step: observing twice between steps gives the same
        readings, and observing less often does not change later ones.
        """
        self._require_reset('observe')
        d = self.config.disturbances
        noise = sensor_rng(self._seed, 'proprioception', self.step_count).standard_normal(len(JOINT_NAMES))
        noise *= np.r_[np.full(len(ARM_JOINT_NAMES), d.joint_noise_std), d.gripper_noise_std]
        if render:
            image = self._render()
        else:
            image = np.zeros((self.config.image_height, self.config.image_width * len(self.config.cameras), 3),
                             np.uint8)
        return Observation(
            image=image,
            joint_positions=self.data.qpos[self._qpos_adr] + noise,
            joint_velocities=self.data.qvel[self._dof_adr].copy(),
            environment_state=np.concatenate([self.cube_position, self.cube_quaternion, self.goal_position]),
            instruction=self.instruction,
            time=self.time,
            step=self.step_count,
        )

    def _render(self) -> np.ndarray:
        """(H, N * W, 3) uint8 RGB: the N configured cameras tiled left to right, each with its own
        pixel noise (camera i's from sensor stream i, so the first camera's image is the same however
        many others are rendered)."""
        tiles = self._renderer.render(self.data, self.config.cameras)
        std = self.config.disturbances.image_noise_std
        if std > 0.0:
            for i, tile in enumerate(tiles):
                tiles[i] = add_pixel_noise(tile, std, sensor_rng(self._seed, 'image', self.step_count, i))
        return tiles[0] if len(tiles) == 1 else np.concatenate(tiles, axis=1)

    @property
    def cameras(self) -> tuple[str, ...]:
        """The cameras tiled left to right in every image, in order."""
        return self.config.cameras

    @property
    def time(self) -> float:
        """Simulated seconds since reset."""
        return float(self.data.time)

    @property
    def ee_position(self) -> np.ndarray:
        """(3,) position of ``ee_site``, between the fingertips (m, world)."""
        return self.data.site_xpos[self._ee_site].copy()

    @property
    def cube_position(self) -> np.ndarray:
        """(3,) cube centre (m, world)."""
        return self.data.qpos[self._cube_qpos:self._cube_qpos + 3].copy()

    @property
    def cube_quaternion(self) -> np.ndarray:
        """(4,) cube orientation, unit quaternion (w, x, y, z)."""
        return self.data.qpos[self._cube_qpos + 3:self._cube_qpos + 7].copy()

    @property
    def goal_position(self) -> np.ndarray:
        """(3,) goal marker position (m, world); z = 0 for goals on the table."""
        return self.data.mocap_pos[self._goal_mocap].copy()

    @property
    def cube_grasped(self) -> bool:
        """Whether both fingers touch the cube."""
        contact = self.data.contact[:self.data.ncon]
        touching = set(contact.geom2[contact.geom1 == self._cube_geom])
        touching.update(contact.geom1[contact.geom2 == self._cube_geom])
        return all(g in touching for g in self._finger_geoms)

    @property
    def cube_lift(self) -> float:
        """Height of the cube's centre above where it rests on the table (m)."""
        return float(self.cube_position[2]) - self.cube_half_size

    @property
    def cube_resting(self) -> bool:
        """Whether the cube lies on the table and is (nearly) still."""
        on_table = self.cube_position[2] < self.cube_half_size + _RESTING_HEIGHT_TOLERANCE
        speed = np.linalg.norm(self.data.qvel[self._cube_dof:self._cube_dof + 3])
        return bool(on_table and speed < _RESTING_SPEED)

    # ----------------------------------------------------------------- task hooks
    def place_cube(self, xy: np.ndarray, yaw: float) -> None:
        """Put the cube on the table at ``xy`` (m) with heading ``yaw`` (rad), at rest."""
        a = self._cube_qpos
        self.data.qpos[a:a + 3] = (xy[0], xy[1], self.cube_half_size)
        self.data.qpos[a + 3:a + 7] = (np.cos(yaw / 2), 0.0, 0.0, np.sin(yaw / 2))
        self.data.qvel[self._cube_dof:self._cube_dof + 6] = 0.0

    def place_goal(self, position: np.ndarray) -> None:
        """Move the goal marker to ``position`` (m); show the task's marker (sphere on a stand, or disc)."""
        self.data.mocap_pos[self._goal_mocap] = position
        half_height = max(float(position[2]), 1e-3) / 2   # the stand reaches from the table up
        self.model.geom_size[self._goal_stand, 1] = half_height
        self.model.geom_pos[self._goal_stand, 2] = -half_height
        for kind, geoms in self._goal_geoms.items():
            shown = self.task is not None and kind == self.task.goal_marker
            for geom in geoms:
                self.model.geom_rgba[geom, 3] = self._goal_alpha[geom] if shown else 0.0
