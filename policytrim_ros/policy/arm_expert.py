"""The embedded arm's scripted experts: Cartesian waypoints, damped-least-squares IK on MuJoCo, rolled
out per chunk; ``ScriptedExpertPolicy`` serves them as a policy backend (demo, data collection, references).

``ScriptedExpert.chunk`` is stateless: the phase of the task (approach, descend, close, carry,
place, ...) is read off the observed joints and the privileged cube/goal state every call. It
then rolls a small kinematic belief (arm joints, gripper, predicted cube) forward for H control
steps: each step picks the current waypoint from the phase, moves the end effector toward it at a
bounded speed with the gripper pointing down, and solves IK with ``mujoco.mj_jacSite`` on a
private ``MjData``. Phases advance inside the chunk (e.g. close, then lift once the predicted
gripper reaches the cube), so a chunk is a plausible plan even when only its start is executed.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import mujoco
import numpy as np

from policytrim_ros.policy.base import Observation, PolicyInputError, PolicyMetadata
from policytrim_ros.robots.arm import (ARM_JOINT_NAMES, ENVIRONMENT_STATE_LAYOUT, JOINT_NAMES, SCENE_PATH,
                                       TASK_INSTRUCTIONS, task_for_instruction)

OPEN = 0.04             # gripper opening per finger when open (m)
PUSH_OPENING = 0.012    # per finger while pushing: both fingertips touch the cube's face (m)
HOVER_Z = 0.11          # ee height for moving above the table and the cube (m)
GRASP_ABOVE_CENTER = 0.006  # ee above the cube centre when grasping: the palm clears the top (m)
MAX_SPEED = 0.12        # ee speed cap in free space (m/s)
PUSH_SPEED = 0.06       # ee speed cap while pushing (m/s)
MIN_SPEED = 0.02        # ee speed floor, so waypoints are reached, not approached forever (m/s)
APPROACH_GAIN = 4.0     # ee speed = gain * distance to the waypoint, then capped (1/s)
YAW_SPEED = 1.2         # rotation speed about the vertical (rad/s)
GRIP_SPEED = 0.15       # finger speed (m/s)
JOINT_SPEED = 1.2       # arm joint speed cap (rad/s), also from the measured joints to row 0
HEIGHT_TOLERANCE = 0.015  # "at that height": larger than the ee error actuation noise causes (m)
IK_DAMPING = 0.03       # damped least squares lambda (m, rad)
IK_ITERATIONS = 3


@dataclass
class _Belief:
    """The expert's kinematic picture of the world during a chunk rollout."""

    q: np.ndarray           # (6,) arm joints (rad)
    grip: float             # predicted measured finger opening (m)
    grip_command: float     # commanded finger opening (m)
    cube: np.ndarray        # (3,) cube centre (m)
    cube_yaw: float         # cube heading (rad)
    goal: np.ndarray        # (3,) goal position (m)
    ee: np.ndarray          # (3,) ee_site position, FK of q (m)
    rotation: np.ndarray    # (3, 3) ee_site orientation, FK of q


@dataclass(frozen=True)
class _Waypoint:
    """Where the current phase wants the gripper, and how fast it may get there."""

    position: np.ndarray    # (3,) ee target (m)
    opening_axis: float     # target heading of the finger opening axis (rad)
    grip: float             # target finger opening (m)
    speed: float = MAX_SPEED


def _wrap_to(angle: float, reference: float, period: float) -> float:
    """The angle equivalent to ``angle`` modulo ``period`` that is closest to ``reference``."""
    return reference + (angle - reference + period / 2) % period - period / 2


def _down_rotation(opening_axis: float) -> np.ndarray:
    """(3, 3) ee orientation pointing down (z = -world z) with y along ``opening_axis``."""
    y = np.array([np.cos(opening_axis), np.sin(opening_axis), 0.0])
    z = np.array([0.0, 0.0, -1.0])
    return np.column_stack([np.cross(y, z), y, z])


class ScriptedExpert:
    """Per-task scripted expert for ``ArmEnv`` tasks; owns its own model for kinematics only."""

    def __init__(self, model_path: str | Path = SCENE_PATH) -> None:
        self.model = mujoco.MjModel.from_xml_path(str(model_path))
        self.data = mujoco.MjData(self.model)
        joints = [self.model.joint(n) for n in ARM_JOINT_NAMES]
        self._qpos_adr = np.array([j.qposadr[0] for j in joints])
        self._dof_adr = np.array([j.dofadr[0] for j in joints])
        margin = 0.02  # rad inside the hard limits, so noise does not pin a joint there
        self._lower = np.array([j.range[0] for j in joints]) + margin
        self._upper = np.array([j.range[1] for j in joints]) - margin
        self._site = self.model.site('ee_site').id
        self._half = float(self.model.geom('cube').size[2])
        pad = self.model.geom('finger_left').size
        self._pad_half_width, self._pad_half_height = float(pad[0]), float(pad[2])
        self._jacp = np.zeros((3, self.model.nv))
        self._jacr = np.zeros((3, self.model.nv))
        self._planners = {'reach': self._reach, 'push': self._push, 'pick_place': self._pick_place}
        if set(self._planners) != set(TASK_INSTRUCTIONS):
            raise RuntimeError(f'experts {sorted(self._planners)} do not cover the tasks {sorted(TASK_INSTRUCTIONS)}')

    def chunk(self, task: str, joint_positions: np.ndarray, environment_state: np.ndarray,
              chunk_size: int, control_dt: float) -> np.ndarray:
        """(H, A) absolute joint targets for the next ``chunk_size`` control steps.

        joint_positions: (A,) observed joints (rad; gripper opening in m), noise welcome.
        environment_state: (10,) privileged cube pose and goal, see ``ENVIRONMENT_STATE_LAYOUT``.
        control_dt: seconds per row. The last column is the commanded finger opening (m).
        """
        if task not in self._planners:
            raise ValueError(f"no expert for task '{task}' (tasks: {sorted(self._planners)})")
        q = np.asarray(joint_positions, dtype=np.float64)
        state = np.asarray(environment_state, dtype=np.float64)
        if q.shape != (len(JOINT_NAMES),) or state.shape != (10,):
            raise ValueError(f'joint_positions must be ({len(JOINT_NAMES)},) and environment_state (10,), '
                             f'got {q.shape} and {state.shape}')
        if not (np.isfinite(q).all() and np.isfinite(state).all()):
            raise ValueError('joint_positions or environment_state contains NaN or inf')
        if chunk_size < 1 or not control_dt > 0:
            raise ValueError(f'chunk_size ({chunk_size}) must be >= 1 and control_dt ({control_dt}) > 0')
        w, x, y, z = state[ENVIRONMENT_STATE_LAYOUT['cube_quaternion']]
        grip = float(np.clip(q[6], 0.0, OPEN))
        belief = _Belief(q=np.clip(q[:6], self._lower, self._upper), grip=grip, grip_command=grip,
                         cube=state[ENVIRONMENT_STATE_LAYOUT['cube_position']].copy(),
                         cube_yaw=float(np.arctan2(2 * (w * z + x * y), 1 - 2 * (y * y + z * z))),
                         goal=state[ENVIRONMENT_STATE_LAYOUT['goal_position']].copy(),
                         ee=np.zeros(3), rotation=np.eye(3))
        self._forward(belief)
        plan = self._planners[task]
        rows = np.empty((chunk_size, len(JOINT_NAMES)))
        for k in range(chunk_size):
            was_grasped = self._grasped(belief)
            waypoint = plan(belief)
            previous_ee = belief.ee.copy()
            self._move(belief, waypoint, control_dt)
            self._predict_cube(belief, task, previous_ee, was_grasped)
            stopped_by_cube = self._between(belief)  # the fingers cannot close past a cube between them
            belief.grip = max(belief.grip_command, self._half) if stopped_by_cube else belief.grip_command
            rows[k, :6] = belief.q
            rows[k, 6] = belief.grip_command
        return rows

    # ------------------------------------------------------------ kinematics
    def _forward(self, belief: _Belief) -> None:
        """Update ``belief.ee`` and ``belief.rotation`` from ``belief.q`` (and the Jacobians)."""
        self.data.qpos[self._qpos_adr] = belief.q
        mujoco.mj_kinematics(self.model, self.data)
        mujoco.mj_comPos(self.model, self.data)
        belief.ee = self.data.site_xpos[self._site].copy()
        belief.rotation = self.data.site_xmat[self._site].reshape(3, 3).copy()
        mujoco.mj_jacSite(self.model, self.data, self._jacp, self._jacr, self._site)

    def _solve_ik(self, belief: _Belief, position: np.ndarray, rotation: np.ndarray, dt: float) -> None:
        """Damped least squares on the 6 arm joints toward the (position, rotation) pose.

        The joint change is capped at ``JOINT_SPEED * dt`` per joint.
        """
        q_start = belief.q.copy()
        for _ in range(IK_ITERATIONS):
            # rotation error 0.5 * sum_i (x_i cross x_i*) over the frame axes, via a skew matrix
            skew = rotation @ belief.rotation.T
            skew = skew - skew.T
            error = np.concatenate((position - belief.ee, 0.5 * skew[[2, 0, 1], [1, 2, 0]]))
            if np.linalg.norm(error) < 1e-4:
                break
            jac = np.vstack([self._jacp[:, self._dof_adr], self._jacr[:, self._dof_adr]])
            dq = jac.T @ np.linalg.solve(jac @ jac.T + IK_DAMPING**2 * np.eye(6), error)
            belief.q = np.clip(belief.q + dq, self._lower, self._upper)
            self._forward(belief)
        max_step = JOINT_SPEED * dt
        if np.abs(belief.q - q_start).max() > max_step:
            belief.q = q_start + np.clip(belief.q - q_start, -max_step, max_step)
            self._forward(belief)

    def _move(self, belief: _Belief, waypoint: _Waypoint, dt: float) -> None:
        """One control step toward ``waypoint``: bounded ee, yaw and finger motion, then IK."""
        delta = waypoint.position - belief.ee
        distance = float(np.linalg.norm(delta))
        speed = np.clip(APPROACH_GAIN * distance, MIN_SPEED, waypoint.speed)
        position = belief.ee + delta * min(1.0, speed * dt / max(distance, 1e-9))
        axis = self._opening_axis(belief)
        target_axis = _wrap_to(waypoint.opening_axis, axis, 2 * np.pi)
        axis += float(np.clip(target_axis - axis, -YAW_SPEED * dt, YAW_SPEED * dt))
        self._solve_ik(belief, position, _down_rotation(axis), dt)
        step = GRIP_SPEED * dt
        belief.grip_command += float(np.clip(waypoint.grip - belief.grip_command, -step, step))

    @staticmethod
    def _opening_axis(belief: _Belief) -> float:
        """Heading (rad) of the ee's y axis, the direction the fingers open along."""
        return float(np.arctan2(belief.rotation[1, 1], belief.rotation[0, 1]))

    def _heading(self, belief: _Belief, desired: float, period: float) -> float:
        """The heading equal to ``desired`` modulo ``period`` (a symmetry of the grasp) that needs
        the least rotation while keeping joint6 (the tool roll) 0.3 rad inside its limits."""
        current = self._opening_axis(belief)
        candidates = _wrap_to(desired, current, period) + period * np.arange(-3, 4)
        candidates = candidates[np.abs(candidates - current) < np.pi]
        joint6 = belief.q[5] - (candidates - current)  # pointing down, the heading turns against joint6
        feasible = (joint6 > self._lower[5] + 0.3) & (joint6 < self._upper[5] - 0.3)
        if not feasible.any():
            return float(candidates[np.argmin(np.abs(joint6))])
        return float(min(candidates[feasible], key=lambda c: abs(c - current)))

    # ------------------------------------------------------------ cube model
    def _between(self, belief: _Belief) -> bool:
        """Whether the cube centre lies between the finger pads (in the ee frame: within 1.5 cm
        along the pads' width, 2 cm along the opening axis and 2 cm vertically)."""
        local = belief.rotation.T @ (belief.cube - belief.ee)
        return bool(abs(local[0]) < 0.015 and abs(local[1]) < 0.02 and abs(local[2]) < 0.02)

    def _grasped(self, belief: _Belief) -> bool:
        """Cube between the pads and the fingers closed on it (opening about its half size)."""
        return self._between(belief) and belief.grip < self._half + 0.004

    def _predict_cube(self, belief: _Belief, task: str, previous_ee: np.ndarray, was_grasped: bool) -> None:
        """Carry a held cube, drop a released one, slide a pushed one."""
        if was_grasped and belief.grip_command < self._half + 0.004:
            belief.cube = belief.cube + (belief.ee - previous_ee)
        elif was_grasped:  # the fingers opened: it falls onto the table
            belief.cube[2] = self._half
        elif task == 'push' and self._fingers_low(belief):
            direction = self._push_direction(belief)
            reach = self._half + self._pad_half_width
            ahead = float(np.dot(belief.cube[:2] - belief.ee[:2], direction))
            if 0.0 < ahead < reach:
                belief.cube[:2] = belief.cube[:2] + direction * (reach - ahead)

    def _fingers_low(self, belief: _Belief) -> bool:
        """Whether the fingertips are below the cube's top (plus 5 mm): moving sideways hits it."""
        return bool(belief.ee[2] - self._pad_half_height < belief.cube[2] + self._half + 0.005)

    # ------------------------------------------------------------ per-task waypoints
    def _reach(self, belief: _Belief) -> _Waypoint:
        """Straight to the target, keeping the current heading and the gripper open."""
        return _Waypoint(belief.goal.copy(), self._opening_axis(belief), OPEN)

    @staticmethod
    def _push_direction(belief: _Belief) -> np.ndarray:
        """(2,) unit vector from the cube to the goal on the table."""
        delta = belief.goal[:2] - belief.cube[:2]
        return delta / max(float(np.linalg.norm(delta)), 1e-9)

    def _push(self, belief: _Belief) -> _Waypoint:
        """Behind the cube at hover height, down to the table, push along cube->goal, lift off."""
        direction = self._push_direction(belief)
        distance = float(np.linalg.norm(belief.goal[:2] - belief.cube[:2]))
        axis = self._heading(belief, np.arctan2(direction[1], direction[0]) + np.pi / 2, np.pi)
        push_z = belief.cube[2] + GRASP_ABOVE_CENTER
        contact = self._half + self._pad_half_width  # ee-to-cube-centre distance when touching
        ee_xy = belief.ee[:2]
        if distance < 0.012:  # done: lift off so the cube comes to rest
            return _Waypoint(np.r_[ee_xy, HOVER_Z], axis, PUSH_OPENING)
        relative = belief.cube[:2] - ee_xy
        ahead = float(np.dot(relative, direction))
        lateral = float(direction[0] * relative[1] - direction[1] * relative[0])
        start = belief.cube[:2] - direction * (contact + 0.03)  # 3 cm behind the cube, on the line
        if self._fingers_low(belief):
            on_line = -0.005 < ahead - contact < 0.05 and abs(lateral) < 0.015
            if on_line and belief.ee[2] < push_z + HEIGHT_TOLERANCE:
                target = belief.goal[:2] - direction * contact
                return _Waypoint(np.r_[target, push_z], axis, PUSH_OPENING, PUSH_SPEED)
            if ahead > contact - 0.005 and abs(lateral) < 0.05:  # behind it: (re)align and descend
                return _Waypoint(np.r_[start, push_z], axis, PUSH_OPENING)
            return _Waypoint(np.r_[ee_xy, HOVER_Z], axis, PUSH_OPENING)  # beside or past it: go up
        aligned = np.linalg.norm(ee_xy - start) < 0.012 and abs(self._opening_axis(belief) - axis) < 0.15
        return _Waypoint(np.r_[start, push_z if aligned else HOVER_Z], axis, PUSH_OPENING)

    def _pick_place(self, belief: _Belief) -> _Waypoint:
        """Above the cube, down, close, lift, carry over the goal, lower, open, retreat."""
        half = self._half
        ee_xy, cube_xy, goal_xy = belief.ee[:2], belief.cube[:2], belief.goal[:2]
        axis = self._opening_axis(belief)
        if self._grasped(belief):
            to_goal = float(np.linalg.norm(goal_xy - cube_xy))
            target_xy = goal_xy + (ee_xy - cube_xy)  # keep the cube's offset in the grasp
            if to_goal < 0.012 and belief.cube[2] < half + HEIGHT_TOLERANCE:  # on the target: let go
                return _Waypoint(belief.ee.copy(), axis, OPEN)
            if belief.cube[2] < half + 0.003 and belief.grip_command > half - 0.01:
                return _Waypoint(belief.ee.copy(), axis, 0.0)  # fingers just touched it: squeeze first
            if to_goal > 0.04:
                lifted = belief.cube[2] > half + 0.02
                return _Waypoint(np.r_[target_xy if lifted else ee_xy, HOVER_Z], axis, 0.0)
            if to_goal > 0.012:  # close: fix xy at this height, never bob back up
                return _Waypoint(np.r_[target_xy, belief.ee[2]], axis, 0.0)
            place_z = belief.ee[2] - belief.cube[2] + half  # ee height that sets the cube on the table
            return _Waypoint(np.r_[target_xy, place_z], axis, 0.0)
        at_goal = np.linalg.norm(goal_xy - cube_xy) < 0.02 and belief.cube[2] < half + 0.01
        if at_goal:  # placed: retreat upward with the fingers open
            return _Waypoint(np.r_[ee_xy, HOVER_Z], axis, OPEN)
        grasp_axis = self._heading(belief, belief.cube_yaw, np.pi / 2)
        grasp_z = belief.cube[2] + GRASP_ABOVE_CENTER
        offset = float(np.linalg.norm(ee_xy - cube_xy))
        low = self._fingers_low(belief)
        closing = belief.grip < OPEN - 0.005 or belief.ee[2] < grasp_z + HEIGHT_TOLERANCE
        if low and closing and self._between(belief):
            return _Waypoint(np.r_[cube_xy, grasp_z], grasp_axis, 0.0)  # close on it
        descending = belief.ee[2] < HOVER_Z - 0.01
        tolerance = 0.02 if descending else 0.01  # looser once on the way down: no bobbing
        opened = belief.grip > half + 0.01
        if offset < tolerance and opened and abs(axis - grasp_axis) < 0.2:
            return _Waypoint(np.r_[cube_xy, grasp_z], grasp_axis, OPEN)
        if low:  # missed or closed on nothing: go up, opening
            return _Waypoint(np.r_[ee_xy, HOVER_Z], grasp_axis, OPEN)
        return _Waypoint(np.r_[cube_xy, HOVER_Z], grasp_axis, OPEN)


class ScriptedExpertPolicy:
    """Emits H future expert actions planned from the current (noisy) joint state.

    The task is recognised from the instruction, as a VLA would; the expert also reads the
    privileged environment state (cube and goal poses), so it needs ``uses_environment_state``.
    """

    def __init__(self, chunk_size: int, control_dt: float):
        self.metadata = PolicyMetadata(name='expert', chunk_size=chunk_size, joint_names=JOINT_NAMES,
                                       image_size=None, uses_environment_state=True)
        self.control_dt = control_dt
        self._expert = ScriptedExpert()

    def reset(self) -> None:
        """The expert is stateless."""

    def predict_action_chunk(self, observation: Observation) -> np.ndarray:
        task = task_for_instruction(observation.instruction)
        if task is None:
            raise PolicyInputError(f'the scripted expert knows the tasks {tuple(TASK_INSTRUCTIONS)}; instruction '
                                   f'{observation.instruction!r} matches none of them')
        return self._expert.chunk(task, observation.joint_positions, observation.environment_state,
                                  self.metadata.chunk_size, self.control_dt)
