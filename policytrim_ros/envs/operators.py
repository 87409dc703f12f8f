"""Step-wise demonstration operators: one action (A,) per control step.

Both styles wrap a step expert (``StepExpert``), the way a teleoperator streams targets: one
single-point JointTrajectory per control step. On the embedded arm that is ``ScriptedExpert``
re-planned every step (``chunk(...)[0]``, absolute joint targets); on Meta-World it is the task's
bundled expert (hand motion deltas and a gripper effort, see ``policy.metaworld_expert``).
``EfficientOperator`` is the plain expert. ``TeleopOperator`` adds the redundancy of human
teleoperation: a reaction-time dwell at the start, hesitations, pauses before grasping or
releasing, small detours and overshoot-then-correct motions. ``ActionLayout`` says which columns
move the arm and whether they are absolute targets or per-step motions, so the same state machine
serves both robots. On the arm, with the defaults and the env's default disturbances, its episodes
are 20-30% longer (seeds 0-599 per task, paired with the efficient operator: reach x1.31, push
x1.20, pick_place x1.20) and succeed within 150 steps in 1.00 / 0.90 / 0.98 of them (push
failures are nearly all timeouts, 0.99 succeed within 300 steps: a longer episode gives the env
more chances to kick the cube). That redundancy is what PolicyTrim's step reduction removes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar, Mapping, Protocol

import numpy as np

from policytrim_ros.config import from_dict, suggest
from policytrim_ros.policy.arm_expert import ScriptedExpert
from policytrim_ros.policy.base import Observation

OPERATOR_STYLES: tuple[str, ...] = ('efficient', 'teleop')
"""Registered demonstration styles (``make_operator`` keys, the ``style`` of an ``Episode``)."""

# The operator's random stream: SeedSequence(seed, spawn_key=(_OPERATOR_STREAM,)), disjoint from
# the envs' streams (spawn keys 0-5), so operator draws never change the env's disturbances.
_OPERATOR_STREAM = 0x0BE7


class StepExpert(Protocol):
    """The expert's action (A,) for the next control step of ``task``, from the observation."""

    def __call__(self, task: str, observation: Observation, control_dt: float) -> np.ndarray: ...


class ArmStepExpert:
    """The embedded arm's ``ScriptedExpert``, re-planned from the observed joints: its first target."""

    def __init__(self, expert: ScriptedExpert | None = None) -> None:
        self._expert = expert if expert is not None else ScriptedExpert()

    def __call__(self, task: str, observation: Observation, control_dt: float) -> np.ndarray:
        """(7,) absolute joint targets (rad; gripper opening in m)."""
        return self._expert.chunk(task, observation.joint_positions, observation.environment_state,
                                  1, control_dt)[0]


@dataclass(frozen=True)
class ActionLayout:
    """The action columns as the teleop operator reads them, and its thresholds in their units.

    arm: columns that move the arm; column ``arm.stop`` is the gripper command.
    detour: columns a detour drifts (those that move the hand around).
    moving_step: a commanded arm step (norm) above this counts as moving.
    slowing_ratio: the expert "slows down" when its arm step shrinks below this ratio of a
        previous commanded step larger than moving_step.
    arm_still: an expert arm step (norm) below this is slow enough for a grasp or a release.
    gripper_moving: a change of the gripper command above this is a gripper motion.
    relative: False when the arm columns are absolute targets (the arm's joints); True when they
        are per-step motions (Meta-World's hand deltas). Then each target is measured from the
        previous one, which stays the origin: the expert's motion is its target, holding still
        commands zero motion, and commands are clipped to [-motion_limit, motion_limit] per column.
    motion_limit: largest per-step motion of a relative column (its action space's bound).
    """

    arm: slice
    detour: slice
    moving_step: float
    slowing_ratio: float
    arm_still: float
    gripper_moving: float
    relative: bool = False
    motion_limit: float = 1.0

    @property
    def gripper(self) -> int:
        """The gripper command's column."""
        return self.arm.stop


ARM_LAYOUT = ActionLayout(
    arm=slice(0, 6),       # the six arm joints; column 6 is the gripper
    detour=slice(0, 3),    # base yaw, shoulder, elbow: the joints that move the hand around
    moving_step=0.01,      # rad, norm
    slowing_ratio=0.7,
    arm_still=0.04,        # rad, norm; the expert moves up to 0.12 rad per step in free space
    gripper_moving=0.002,  # m per step (4x the reading noise); the expert moves the fingers 0.015 m per step
)
"""How the teleop operator reads the embedded arm's absolute joint targets."""


class Operator(Protocol):
    """Produces one action per control step; ``reset`` before each episode."""

    style: str

    def reset(self, task: str, seed: int, control_dt: float) -> None:
        """Start an episode of ``task``; ``seed`` seeds any randomness of the operator."""

    def act(self, observation: Observation) -> np.ndarray:
        """(A,) action for the next control step: absolute joint targets on the arm (rad; gripper
        opening in m), hand motion and gripper effort on Meta-World."""


class EfficientOperator:
    """The step expert (by default the arm's), re-planned from the observation every control step."""

    style = 'efficient'

    def __init__(self, expert: StepExpert | None = None) -> None:
        self._expert = expert if expert is not None else ArmStepExpert()
        self._task = ''
        self._control_dt = 0.0

    def reset(self, task: str, seed: int, control_dt: float) -> None:
        """The expert is deterministic: ``seed`` is not used."""
        self._task, self._control_dt = task, control_dt

    def act(self, observation: Observation) -> np.ndarray:
        if not self._task:
            raise RuntimeError('call reset(task, seed, control_dt) before act()')
        return self._expert(self._task, observation, self._control_dt)


def _check_steps(name: str, value: tuple[int, int], minimum: int) -> tuple[int, int]:
    """Validate an inclusive (lo, hi) range of control steps; return it as ints."""
    if len(value) != 2 or any(int(v) != v for v in value):
        raise ValueError(f'{name} ({value}) must be a (lo, hi) pair of whole control steps')
    lo, hi = int(value[0]), int(value[1])
    if not minimum <= lo <= hi <= 50:
        raise ValueError(f'{name} ({value}) must satisfy {minimum} <= lo <= hi <= 50 steps')
    return lo, hi


@dataclass(frozen=True)
class TeleopConfig:
    """Human-like redundancy added to the expert. Ranges are inclusive (lo, hi), drawn uniformly.

    dwell_steps: control steps the arm holds still at the start (operator reaction time).
    hesitation_probability: chance per control step, while following the expert, of a hesitation.
    hesitation_steps: control steps a hesitation holds the last target (arm and gripper).
    detour_probability: chance per control step, while following the expert, of a detour.
    detour_steps: control steps a detour drifts for; the expert steers back afterwards.
    detour_size: joint-space distance (rad, norm over base yaw, shoulder and elbow) a detour drifts
        in a random direction, spread evenly over its steps (0.08 rad moves the hand a few cm);
        ``MetaWorldTeleopConfig`` has it in cm of hand motion.
    overshoot_probability: chance per control step, while the expert slows down toward a waypoint
        (its joint step shrinks below 0.7 of the previous commanded step of > 0.01 rad; see
        ``ActionLayout``), that the operator keeps moving at the previous step instead, then comes
        back (a correction).
    overshoot_steps: control steps an overshoot keeps moving for.
    grasp_pause_probability: chance that the operator pauses when the expert starts to close or
        open the gripper with the arm still (a grasp or a release: checking before committing).
    grasp_pause_steps: control steps such a pause holds the last target.
    """

    _detour_limit: ClassVar[tuple[float, str]] = (0.5, 'rad')  # largest detour_size and its unit
    dwell_steps: tuple[int, int] = (2, 6)
    hesitation_probability: float = 0.03
    hesitation_steps: tuple[int, int] = (2, 5)
    detour_probability: float = 0.02
    detour_steps: tuple[int, int] = (3, 6)
    detour_size: float = 0.08
    overshoot_probability: float = 0.3
    overshoot_steps: tuple[int, int] = (1, 3)
    grasp_pause_probability: float = 0.7
    grasp_pause_steps: tuple[int, int] = (2, 6)

    def __post_init__(self) -> None:
        object.__setattr__(self, 'dwell_steps', _check_steps('dwell_steps', self.dwell_steps, 0))
        for name in ('hesitation_steps', 'detour_steps', 'overshoot_steps', 'grasp_pause_steps'):
            object.__setattr__(self, name, _check_steps(name, getattr(self, name), 1))
        for name in ('hesitation_probability', 'detour_probability', 'overshoot_probability',
                     'grasp_pause_probability'):
            p = getattr(self, name)
            if not 0.0 <= p <= 1.0:
                raise ValueError(f'{name} ({p}) must be in [0, 1]')
        total = self.hesitation_probability + self.detour_probability
        if total > 1.0:
            raise ValueError(f'hesitation_probability + detour_probability ({total}) must be <= 1')
        limit, unit = self._detour_limit
        if not (math.isfinite(self.detour_size) and 0.0 <= self.detour_size <= limit):
            raise ValueError(f'detour_size ({self.detour_size}) must be in [0, {limit}] {unit}')

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> TeleopConfig:
        """Build from a (YAML) mapping; an unknown key raises ConfigError with a suggestion."""
        return from_dict(cls, dict(d))


@dataclass(frozen=True)
class MetaWorldTeleopConfig(TeleopConfig):
    """``TeleopConfig`` for Meta-World (same fields and rules): detours in cm of hand motion.

    detour_size: distance (cm, i.e. action units) a detour drifts the hand in a random xyz
        direction, spread evenly over its steps and added to the expert's motion (the sum is
        clipped to Meta-World's [-1, 1] per axis).
    The other fields are step counts and probabilities, as on the arm. With the defaults and the
    default disturbances (seeds 0-59, 150-step limit, paired with the efficient operator) episodes
    are longer: reach-v3 x1.16, push-v3 x1.39, pick-place-v3 x1.27, and succeed in 0.95 / 0.83 /
    0.87 of them (efficient: 1.00 / 0.93 / 0.95; a longer episode gets more kicks of the puck).
    """

    _detour_limit: ClassVar[tuple[float, str]] = (10.0, 'cm')
    detour_size: float = 3.0


METAWORLD_LAYOUT = ActionLayout(
    arm=slice(0, 3), detour=slice(0, 3), relative=True,
    moving_step=0.1,     # cm per step: the experts move up to 1 cm per axis and step
    slowing_ratio=0.9,   # the experts' proportional control decays by ~0.9 per step near a waypoint
    # The experts start closing while still descending (0.4-0.65 cm per step), so any motion below
    # the top speed of one axis counts as still enough for a grasp pause.
    arm_still=1.0,
    gripper_moving=0.1,  # effort units: the experts switch between 0 and 0.6 or 1
)
"""How the teleop operator reads Meta-World actions: relative hand motion, then a gripper effort."""


class TeleopOperator:
    """The expert with a teleoperator's redundancy; same seed and observations, same actions.

    A small state machine over targets: 'dwell' at the start, then 'follow' the expert; while
    following, each step may start a 'hesitate' (hold the last target; also when the gripper is
    about to close or open), a 'detour' (expert target plus a drift of the hand) or, while the
    expert slows down, an 'overshoot' (continue the last commanded step). Every event lasts a drawn
    number of steps, then following resumes and the expert, re-planning from the observation,
    corrects whatever the event did. ``layout`` maps actions to targets (``ActionLayout``); with
    per-step motions (Meta-World) holding a target commands zero motion.
    """

    style = 'teleop'

    def __init__(self, config: TeleopConfig | None = None, expert: StepExpert | None = None,
                 layout: ActionLayout = ARM_LAYOUT) -> None:
        self.config = config if config is not None else TeleopConfig()
        self.layout = layout
        self._expert = expert if expert is not None else ArmStepExpert()
        self._task = ''
        self._control_dt = 0.0
        self._rng = np.random.default_rng(0)
        self._mode = 'dwell'
        self._left = 0                            # steps left in the current event
        self._previous: np.ndarray | None = None  # (A,) last commanded target
        self._step = np.zeros(0)                  # (A,) last commanded change of target
        self._motion = np.zeros(0)                # (A,) per-step change in a detour or overshoot
        self._paused_for_gripper = False          # a pause was drawn for the gripper motion ahead

    def reset(self, task: str, seed: int, control_dt: float) -> None:
        """Start an episode; all operator randomness comes from ``seed``."""
        self._task, self._control_dt = task, control_dt
        sequence = np.random.SeedSequence(seed, spawn_key=(_OPERATOR_STREAM,))
        self._rng = np.random.default_rng(sequence)
        self._start('dwell', self.config.dwell_steps)
        self._previous = None
        self._paused_for_gripper = False

    def act(self, observation: Observation) -> np.ndarray:
        if not self._task:
            raise RuntimeError('call reset(task, seed, control_dt) before act()')
        layout, g = self.layout, self.layout.gripper
        expert = np.asarray(self._expert(self._task, observation, self._control_dt), dtype=np.float64)
        if self._previous is None:  # first step: the dwell holds the pose the arm starts in
            if layout.relative:     # ... i.e. no motion, with the gripper command the expert starts with
                self._previous = np.zeros_like(expert)
                self._previous[g] = expert[g]
            else:
                self._previous = observation.joint_positions.copy()
            self._step = np.zeros_like(self._previous)
        if self._left == 0:  # the dwell or the last event is over
            self._mode = 'follow'
            self._maybe_start_event(expert)
        action = self._action(expert)
        if layout.relative:
            action[layout.arm] = np.clip(action[layout.arm], -layout.motion_limit, layout.motion_limit)
        if self._mode != 'follow':
            self._left -= 1
        self._step = action - self._previous
        self._previous = action.copy()
        if layout.relative:
            self._previous[layout.arm] = 0.0  # the next motion starts from this target
        if abs(self._step[g]) > layout.gripper_moving:
            self._paused_for_gripper = False  # the next gripper motion may get its own pause
        return action

    def _maybe_start_event(self, expert: np.ndarray) -> None:
        """While following, draw whether a pause, hesitation, detour or overshoot starts now."""
        c, rng, layout = self.config, self._rng, self.layout
        arm, g = layout.arm, layout.gripper
        # a grasp or a release: the gripper starts to move while the arm stays (nearly) still
        grasp = (abs(expert[g] - self._previous[g]) > layout.gripper_moving
                 and abs(self._step[g]) <= layout.gripper_moving
                 and np.linalg.norm((expert - self._previous)[arm]) < layout.arm_still)
        if grasp and not self._paused_for_gripper and rng.random() < c.grasp_pause_probability:
            self._paused_for_gripper = True
            self._start('hesitate', c.grasp_pause_steps)
            return
        draw = rng.random()
        if draw < c.hesitation_probability:
            self._start('hesitate', c.hesitation_steps)
        elif draw < c.hesitation_probability + c.detour_probability:
            self._start('detour', c.detour_steps)
            direction = rng.standard_normal(layout.detour.stop - layout.detour.start)
            self._motion = np.zeros_like(expert)
            self._motion[layout.detour] = c.detour_size * direction / np.linalg.norm(direction) / self._left
        else:
            previous_step = float(np.linalg.norm(self._step[arm]))
            slowing = (previous_step > layout.moving_step and
                       np.linalg.norm((expert - self._previous)[arm]) < layout.slowing_ratio * previous_step)
            if slowing and rng.random() < c.overshoot_probability:
                self._start('overshoot', c.overshoot_steps)
                self._motion = np.zeros_like(expert)
                self._motion[arm] = self._step[arm]

    def _start(self, mode: str, steps: tuple[int, int]) -> None:
        """Enter ``mode`` for a number of steps drawn uniformly from the inclusive ``steps``."""
        self._mode, self._left = mode, int(self._rng.integers(steps[0], steps[1] + 1))

    def _action(self, expert: np.ndarray) -> np.ndarray:
        """(A,) target of this step in the current mode."""
        if self._mode in ('dwell', 'hesitate'):
            return self._previous.copy()
        if self._mode == 'detour':
            return expert + self._motion  # the drift adds up: the expert plans from where it went
        if self._mode == 'overshoot':
            action = self._previous + self._motion
            action[self.layout.gripper] = expert[self.layout.gripper]  # the gripper follows the expert
            return action
        return expert


def make_operator(style: str, teleop: TeleopConfig | None = None, suite: str = 'arm') -> Operator:
    """The operator of ``style`` (one of ``OPERATOR_STYLES``) for the robot of ``suite``.

    teleop: configures 'teleop': a ``TeleopConfig`` on the arm, a ``MetaWorldTeleopConfig``
        (Meta-World units) on Meta-World; None takes the suite's defaults.
    suite: 'arm' (the embedded arm) or 'metaworld' (``envs.factory.task_suite`` tells which).
    """
    if style not in OPERATOR_STYLES:
        raise ValueError(f"unknown operator style '{style}'{suggest(str(style), OPERATOR_STYLES)} "
                         f'(styles: {list(OPERATOR_STYLES)})')
    if suite == 'arm':
        expert, layout, config_type = ArmStepExpert(), ARM_LAYOUT, TeleopConfig
    elif suite == 'metaworld':
        from policytrim_ros.policy.metaworld_expert import MetaWorldStepExpert
        expert, layout, config_type = MetaWorldStepExpert(), METAWORLD_LAYOUT, MetaWorldTeleopConfig
    else:
        raise ValueError(f"suite '{suite}' must be 'arm' or 'metaworld'")
    if style == 'efficient':
        return EfficientOperator(expert)
    teleop = teleop if teleop is not None else config_type()
    if type(teleop) is not config_type:
        raise ValueError(f'teleop ({type(teleop).__name__}) must be a {config_type.__name__} for the {suite} '
                         f'suite (its units)')
    return TeleopOperator(teleop, expert, layout)
