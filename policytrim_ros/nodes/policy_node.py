"""policy_node: camera + joint states + instruction in, one trajectory per inference call out.

Each call sends the chunk's executed window (h of H actions) as ONE timed trajectory to a
joint_trajectory_controller (its topic, or a FollowJointTrajectory goal), waits until the
controller's clock has passed the window's end and fresh observations arrived, then re-plans.
Windows end moving or at rest, whichever the controller accepts (read from its parameters at
start-up). The model runs on its own thread: a slow or hung one never delays events, the hold or
shutdown. Episodes start on an instruction (or an EpisodeEvent START from the environment) and end
on success, failure, the step limit, preemption, shutdown, a controller rejection or abort, lost
joint states, or a failed or timed-out inference call (a policy server's error or loss); each ends with a hold the controller accepts, an EpisodeStats message and a JSONL
line. Bad input is logged once per cause (then throttled, with since when), counted, and never
reaches the arm.
"""
from __future__ import annotations

import collections
import dataclasses
import functools
import threading
import time

import numpy as np
from geometry_msgs.msg import PoseArray
from rclpy.clock import Clock, ClockType
from rclpy.node import Node
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, JointState
from std_msgs.msg import String

from policytrim_ros import constants as C
from policytrim_ros.config import ConfigError
from policytrim_ros.constants import camera_topic
from policytrim_ros.execution.episode import predict, require_horizon_head
from policytrim_ros.execution.executor import ChunkExecutor
from policytrim_ros.execution.inference import InferenceResult, InferenceThread
from policytrim_ros.execution.metrics import JsonlLog, read_jsonl
from policytrim_ros.execution.safety import UnsafeChunkError
from policytrim_ros.execution.stitching import LEAD_MARGIN_STEPS, StaleChunkError
from policytrim_ros.msg import ChunkStats, EpisodeEvent, EpisodeStats
from policytrim_ros.nodes import conversions as conv
from policytrim_ros.nodes.controller_link import ControllerLink
from policytrim_ros.nodes.params import declare_config
from policytrim_ros.nodes.policy_config import PolicyNodeConfig
from policytrim_ros.nodes.runtime import LATCHED, RELIABLE, CauseLog, run_node
from policytrim_ros.nodes.training_link import TrainingLink
from policytrim_ros.policy.base import InferenceError, Observation, PolicyInputError, camera_mismatch
from policytrim_ros.policy.factory import make_policy
from policytrim_ros.training.episodes import episode_policy, episode_rollout, save_rollout

VERDICT_WAIT_S = 1.0
"""Wall seconds an episode whose last window has run waits for a SUCCESS/FAILURE event before it
ends with end_reason max_steps (sim_node publishes the verdict on a step with that step's
observation; across two topics either can arrive first, and on a loaded machine 0.25 s was seen
to be too short). A verdict stamped after the last window's end is not one on a counted step."""
CLOCK_BACK_S = 1.0
"""Wall seconds the clock must stay before the running episode's start before the episode ends
(a restarted simulator); single earlier readings were seen under ros2 launch and are ignored."""
WAITING_GRACE_S = 1.0
"""Wall seconds an episode may wait for its inputs before the wait is logged."""


class PolicyNode(Node):
    """Runs a chunked policy closed-loop through a trajectory controller and logs its efficiency."""

    def __init__(self):
        super().__init__('policy_node')
        self.config = cfg = declare_config(self, PolicyNodeConfig)
        self.policy = make_policy(cfg.policy, cfg.execution.chunk_size, cfg.execution.control_dt,
                                  cfg.robot.joint_names)
        meta = self.policy.metadata
        require_horizon_head(meta, cfg.execution.horizon)
        if meta.joint_names != cfg.robot.joint_names:
            raise ConfigError(f'the {meta.name} policy commands joints {list(meta.joint_names)} but '
                              f'robot.joint_names is {list(cfg.robot.joint_names)}')
        self.executor_ = ChunkExecutor(cfg.execution, cfg.robot.joint_names, cfg.safety,
                                       'rest' if cfg.controller.window_end == 'auto' else cfg.controller.window_end)
        self.log = JsonlLog(cfg.episode.log_path) if cfg.episode.log_path else None
        self.finished_ids = self._logged_episode_ids()
        self.errors: dict[str, int] = {}
        self.trouble = CauseLog(self.get_logger())
        self._lock = threading.RLock()
        self._latest: dict[str, object] = {}   # topic kind -> latest message (latest-only buffers)
        self._joints_received_at: float | None = None   # monotonic time of the latest joint state
        self._instruction = ''
        self._ready_after = 0.0                # observations must be stamped at/after this time
        self._episode_count = 0
        self._episode_started_at = 0.0         # monotonic
        self._episode_stamp = 0.0              # the running episode's start, input clock
        self._clock_peak = 0.0                 # the latest clock reading in the episode (a lagging clock is no jump)
        self._clock_back_since: float | None = None   # monotonic start of clock readings before the episode
        self._pending_start: EpisodeEvent | None = None   # a START waiting for joint states to judge it
        self._cameras_seen: set[tuple[int, str]] = set()   # (camera, frame_id) of images received, checked once
        self._out_of_steps_at: float | None = None   # wall time the last window completed (monotonic)
        self._last_window_end = 0.0            # end time (input clock) of the last completed window
        self._waiting_since: float | None = None   # monotonic start of a wait for inputs
        self._execution = cfg.execution            # the deployed execution; a trainer's plan may change h
        self._plan = None                          # the running episode's EpisodePlan (trainer.enabled)
        self._episode_policy = None                # the plan's sampling policy, else self.policy
        self._records: list = []                   # the running episode's ChunkRecords
        self._latencies = collections.deque(maxlen=5)   # async: recent calls' seconds, in this node's clock
        self._called_for = None                     # async: the window whose successor is being computed

        self.controller = ControllerLink(self, cfg.controller, cfg.robot.joint_names, cfg.execution.control_dt,
                                         self.executor_, self.trouble, self._on_controller_failure)
        self.controller.read_parameters()   # before any subscription: it spins this node

        t = cfg.topics
        self.episode_pub = self.create_publisher(EpisodeStats, t.episode_stats, RELIABLE)
        self.chunk_pub = self.create_publisher(ChunkStats, t.chunk_stats, RELIABLE)
        self.create_subscription(JointState, t.joint_states, self._on_joints, qos_profile_sensor_data)
        image_topics = (t.cameras or tuple(camera_topic(i) for i in range(meta.num_cameras))
                        if meta.num_cameras else ())   # a policy without images (the expert) ignores them
        if len(image_topics) != meta.num_cameras:
            trained = f' {list(meta.cameras)}' if meta.cameras else ''
            raise ConfigError(f'topics.cameras names {len(image_topics)} topics {list(image_topics)} but the '
                              f'{meta.name} policy takes {meta.num_cameras} camera image(s){trained}: give one '
                              'topic per camera, in that order')
        self._input_topics = {'joints': t.joint_states, **{f'image{i}': topic for i, topic in enumerate(image_topics)}}
        for index, topic in enumerate(image_topics):
            self.create_subscription(Image, topic, functools.partial(self._on_image, index), qos_profile_sensor_data)
        if meta.uses_environment_state:
            self._input_topics['poses'] = t.object_poses
            self.create_subscription(PoseArray, t.object_poses, lambda m: self._store('poses', m),
                                     qos_profile_sensor_data)
        self.create_subscription(String, t.instruction, self._on_instruction, RELIABLE)
        self.create_subscription(EpisodeEvent, t.episode_event, self._on_event, LATCHED)
        # One thread runs every callback (nodes.runtime); the model runs on the inference thread, so
        # events, joint states, the hold and shutdown are handled while it thinks; a finished call
        # wakes the control step.
        self._wake = self.create_guard_condition(self._control_step)
        self._inference = InferenceThread(self._wake.trigger)
        self.training = (TrainingLink(self, cfg, self.policy, self._lock, lambda: self.executor_.active)
                         if cfg.trainer.enabled else None)
        # wall-clock polling: a ROS-time timer stops with a simulator's /clock (a dead sim would never
        # be noticed) and, after a clock jump back, waits for the old time to come round again
        self.create_timer(0.05, self._control_step, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._warm_up()
        self.get_logger().info(
            f'{meta.name} policy: H={cfg.execution.chunk_size} h={cfg.execution.n_action_steps} '
            f'dt={cfg.execution.control_dt}s -> {self.controller.target}, windows end {self.executor_.window_end}'
            + (f'; images from {list(image_topics)}' if image_topics else ''))

    # -- callbacks -----------------------------------------------------------------------------
    def _store(self, kind: str, msg) -> None:
        self._latest[kind] = msg
        self._wake.trigger()

    def _on_joints(self, msg: JointState) -> None:
        self._joints_received_at = time.monotonic()
        self._store('joints', msg)

    def _on_image(self, index: int, msg: Image) -> None:
        seen = (index, msg.header.frame_id)
        if seen not in self._cameras_seen:
            self._cameras_seen.add(seen)
            warning = camera_mismatch(self.policy.metadata, *seen)
            if warning:
                self.get_logger().warning(warning)
        self._store(f'image{index}', msg)

    def _on_instruction(self, msg: String) -> None:
        self._episode_count += 1
        episode_id = f'{self.get_name()}-{self._episode_count:04d}'
        self._start(episode_id, self.config.episode.task or msg.data, msg.data, self._now())

    def _on_event(self, msg: EpisodeEvent) -> None:
        if msg.event == EpisodeEvent.START:
            with self._lock:
                self._pending_start = msg
            self._wake.trigger()
            return
        stamp = conv.to_seconds(msg.header.stamp) or self._now()
        with self._lock:
            ex = self.executor_
            if not ex.active or (msg.episode_id and msg.episode_id != ex.episode_id):
                return
            if ex.out_of_steps and stamp > self._last_window_end + 0.5 * ex.config.control_dt:
                return   # a verdict on a step past the step limit: the episode ends as max_steps
            ex.end_window_at(stamp)
            success = msg.event == EpisodeEvent.SUCCESS
            self._finish(success, C.END_SUCCESS if success else C.END_FAILURE)

    def _take_pending_start(self) -> None:
        """Start the episode of a START event, unless it ended already or began before this node.

        The event topic is latched (a node that joins after the reset still gets it), so a node
        that restarts would otherwise replay the START of an episode that has long ended (and move
        the arm for it) or resume one mid-way with its steps and calls under-counted.
        """
        msg = self._pending_start
        if msg is None:
            return
        if msg.episode_id and self.executor_.active and msg.episode_id == self.executor_.episode_id:
            self._pending_start = None   # the START of the episode running (announced again): keep running it
            return
        stamp = conv.to_seconds(msg.header.stamp)
        if msg.episode_id and msg.episode_id in self.finished_ids:
            self._pending_start = None
            self.get_logger().warning(f'ignoring START of episode {msg.episode_id}: it has already ended '
                                      '(in this node or its episode.log_path); reset the episode to run it again')
            return
        if stamp:
            joints = self._latest.get('joints')
            if joints is None:
                self.trouble.warning('start_waits', f'START of episode {msg.episode_id} waits for the first '
                                     f'joint state on {self.config.topics.joint_states} to check its age')
                return
            behind = conv.to_seconds(joints.header.stamp) - stamp
            if behind > self.config.episode.max_observation_age_s:
                self._pending_start = None
                self.get_logger().warning(
                    f'ignoring START of episode {msg.episode_id}: the robot has run {behind:.2f}s since it '
                    f'(more than episode.max_observation_age_s): it began before this node saw it, and '
                    'resuming would under-count its steps and calls; reset the episode to run it')
                return
        self._pending_start = None
        self.trouble.clear('start_waits')
        self._start(msg.episode_id, msg.task or msg.instruction, msg.instruction, stamp or self._now())

    def _control_step(self) -> None:
        """Re-plan when the window in flight has run and fresh observations are in: the model runs on
        the inference thread, and its chunk is dispatched here when that call returns."""
        with self._lock:
            done = self._inference.take()
            self._take_pending_start()
            ex = self.executor_
            if not ex.active:
                return
            if done is not None:
                self._dispatch(done)
                return
            if self._joint_states_lost():
                return
            if self.controller.problem:
                self._reject('controller', self.controller.problem, ex.episode_id)
                return
            if self._inference.busy:
                self._check_inference_time()
                return
            if self.controller.querying or not self.controller.ready():
                return   # its parameters decide how the first window ends; its action server is needed
            if ex.config.async_inference:
                self._control_step_async()
                return
            if ex.window is not None:
                if self._observed_since(ex.window.end_time - 0.5 * ex.config.control_dt):
                    self._last_window_end = ex.window.end_time
                    ex.complete_window()
                elif not self._cut_on_divergence():
                    return
            if ex.out_of_steps:
                # the simulator's verdict on the last step can arrive just after that step's
                # observation: wait for it briefly before calling the episode out of steps
                if self._out_of_steps_at is None:
                    self._out_of_steps_at = time.monotonic()
                if time.monotonic() - self._out_of_steps_at < VERDICT_WAIT_S:
                    return
                self._finish(False, C.END_MAX_STEPS)
                return
            observation = self._observation()
            if observation is not None:
                self._inference.submit((ex.episode_id, observation),
                                       functools.partial(predict, self._episode_policy or self.policy, observation,
                                                         ex.config.horizon))

    def _control_step_async(self) -> None:
        """execution.async_inference (lock held, no call in flight): start the next window's call once the
        window in flight has about one call's latency left to run (``_async_lead``), from the latest
        observation; the chunk is sent when the call returns."""
        ex, now = self.executor_, self._now()
        w = ex.window
        if w is not None:
            if ex.steps + w.n_steps >= ex.config.max_episode_steps:   # the last window: no call after it
                if now < w.end_time - 0.5 * ex.config.control_dt or not self._observed_since(w.end_time):
                    return
                self._last_window_end = w.end_time
                ex.complete_window()
            elif self._called_for is w or now < w.end_time - self._async_lead():
                return
        if ex.out_of_steps:
            if self._out_of_steps_at is None:
                self._out_of_steps_at = time.monotonic()
            if time.monotonic() - self._out_of_steps_at >= VERDICT_WAIT_S:
                self._finish(False, C.END_MAX_STEPS)
            return
        if w is not None and not self._observed_since(max(self._ready_after, w.start_time)):
            return   # an observation from inside the window in flight (its executed steps are known)
        observation = self._observation()
        if observation is None:
            return
        step = ex.steps + (ex.steps_at(observation.time) if w is not None else 0)
        observation = dataclasses.replace(observation, step=step)
        self._called_for = w
        self._inference.submit((ex.episode_id, observation, now),
                               functools.partial(predict, self._episode_policy or self.policy, observation,
                                                 ex.config.horizon))

    def _async_lead(self) -> float:
        """Seconds before a window's end its successor's call starts: the slowest of the last few calls
        (this node's clock) plus LEAD_MARGIN_STEPS control steps."""
        return max(self._latencies, default=0.0) + LEAD_MARGIN_STEPS * self.executor_.config.control_dt

    def _dispatch_async(self, done: InferenceResult) -> None:
        """Send a finished async call's chunk: it takes over where the window in flight ends (lock held)."""
        ex, now = self.executor_, self._now()
        episode_id, observation, submitted = done.tag
        self._latencies.append(max(0.0, now - submitted))
        chunk, h = done.value
        try:
            traj, record = ex.dispatch_async(chunk, observation.step, now, observation.joint_positions, done.seconds, h)
        except StaleChunkError as err:
            self.errors['stale_chunk'] = self.errors.get('stale_chunk', 0) + 1
            self.trouble.warning('stale_chunk', f'{err}; planning again from the latest observation')
            self._called_for = None
            return
        except UnsafeChunkError as err:
            self._reject('unsafe_chunk', str(err), episode_id)
            return
        self._records.append(record)
        self.controller.send(conv.trajectory_to_msg(traj), episode_id)
        self.chunk_pub.publish(conv.chunk_stats_msg(record, self.get_clock().now().to_msg()))

    def _dispatch(self, done: InferenceResult) -> None:
        """Send the chunk of a finished inference call as the next window (lock held), or end the
        episode if the call failed; a call of an episode that ended meanwhile is dropped."""
        ex = self.executor_
        episode_id, observation = done.tag[:2]
        if ex.episode_id != episode_id or (ex.window is not None and not ex.config.async_inference):
            return  # the episode ended (or was replaced) while the policy was thinking
        if isinstance(done.error, PolicyInputError):
            self._reject('policy_input', str(done.error), episode_id)
            return
        if done.error is not None:
            self._inference_failed(done.error)
            return
        if ex.config.async_inference:
            self._dispatch_async(done)
            return
        chunk, h = done.value
        try:
            traj, record = ex.dispatch(chunk, observation.time, observation.joint_positions, done.seconds, h)
        except UnsafeChunkError as err:
            self._reject('unsafe_chunk', str(err), episode_id)
            return
        self._records.append(record)
        self.controller.send(conv.trajectory_to_msg(traj), episode_id)
        self.chunk_pub.publish(conv.chunk_stats_msg(record, self.get_clock().now().to_msg()))

    def _inference_failed(self, error: BaseException) -> None:
        """End the running episode with the failed call's end_reason (lock held) and hold."""
        end_reason = error.end_reason if isinstance(error, InferenceError) else C.END_INFERENCE_FAILED
        self.errors[end_reason] = self.errors.get(end_reason, 0) + 1
        detail = str(error) if isinstance(error, InferenceError) else f'{type(error).__name__}: {error}'
        self.get_logger().error(f'inference failed ({end_reason}): {detail}; holding, ending the episode')
        self._finish(False, end_reason)

    def _check_inference_time(self) -> None:
        """End the running episode if the call in flight ran past episode.inference_timeout_s (lock held)."""
        running, limit = self._inference.running_for(), self.config.episode.inference_timeout_s
        if running is None or running <= limit:
            return
        self.errors[C.END_INFERENCE_TIMEOUT] = self.errors.get(C.END_INFERENCE_TIMEOUT, 0) + 1
        self.get_logger().error(f'the {self.policy.metadata.name} policy has not returned from a call started '
                                f'{running:.1f}s ago (episode.inference_timeout_s {limit}); holding, ending the '
                                'episode (later episodes wait for that call to return)')
        self._finish(False, C.END_INFERENCE_TIMEOUT)

    def _cut_on_divergence(self) -> bool:
        """horizon divergence: end the window in flight early if the latest joint state left its
        planned targets (lock held); the next chunk is planned from inputs stamped at the cut and
        replaces the rest of the window in the controller."""
        ex = self.executor_
        joints = self._latest.get('joints')
        if ex.config.horizon != 'divergence' or joints is None or self._stamp_problem('joints', joints):
            return False
        stamp = conv.to_seconds(joints.header.stamp)
        executed = ex.steps_at(stamp)
        try:
            measured, _ = conv.joint_state_to_arrays(joints, self.config.robot.joint_names)
        except conv.ObservationError:
            return False
        if not ex.diverged(executed, measured):
            return False
        ex.complete_window(executed)
        self._ready_after = stamp - 0.5 * ex.config.control_dt
        return True

    # -- the controller ------------------------------------------------------------------------
    def _on_controller_failure(self, episode_id: str, end_reason: str) -> None:
        with self._lock:
            if self.executor_.active and self.executor_.episode_id == episode_id:
                self._finish(False, end_reason)

    def _hold(self) -> None:
        """Stop the arm where it is: the controller link cancels the goal, or holds at the
        measured positions (None when no current joint state: then it can send no hold)."""
        joints = self._latest.get('joints')
        positions = None
        try:
            problem = 'no joint state received' if joints is None else self._stamp_problem('joints', joints)
            if problem:
                raise conv.ObservationError(problem)
            positions, _ = conv.joint_state_to_arrays(joints, self.config.robot.joint_names)
        except conv.ObservationError as err:
            if self.config.controller.interface == 'topic':
                self.trouble.error('hold', f'cannot command a hold: {err}; the controller finishes the window it '
                                   'has and then holds its last point')
        self.controller.hold(positions)

    # -- helpers -------------------------------------------------------------------------------
    def _logged_episode_ids(self) -> set[str]:
        """Episode ids the JSONL log already holds (a restarted node must not run them again)."""
        if self.log is None or not self.log.path.is_file():
            return set()
        try:
            return {e.episode_id for e in read_jsonl(self.log.path)}
        except (ValueError, TypeError) as err:
            raise ConfigError(f'episode.log_path {self.log.path} is not a policytrim episode log: {err}') from None

    def _warm_up(self) -> None:
        """One inference on a blank observation before any episode: a learned backend loads its
        instruction encoder and allocates on its first call (2 s on the first episode here), which
        would otherwise make the first chunk of a real run start from a 2 s old observation."""
        meta = self.policy.metadata
        if meta.image_size is None:
            return  # the scripted expert needs no warm-up (and reads privileged state)
        blank = Observation(image=np.zeros((*meta.image_size, 3), np.uint8),
                            joint_positions=np.zeros(len(meta.joint_names)),
                            joint_velocities=np.zeros(len(meta.joint_names)), environment_state=np.zeros(0),
                            instruction='warm up', time=0.0, step=0)
        started = time.perf_counter()
        try:
            predict(self.policy, blank, self.executor_.config.horizon)   # the call an episode makes
        except InferenceError as err:   # a policy server that answers no well-formed call: a setup mistake
            raise ConfigError(f'the warm-up inference of the {meta.name} policy failed: {err}') from None
        self.policy.reset()
        self.get_logger().info(f'warm-up inference: {time.perf_counter() - started:.2f}s')

    def _now(self) -> float:
        return self.get_clock().now().nanoseconds * 1e-9

    def _start(self, episode_id: str, task: str, instruction: str, stamp: float) -> None:
        with self._lock:
            if self.executor_.active:
                self._finish(False, C.END_PREEMPTED)
            self.policy.reset()
            version, seed = self._plan_episode(episode_id)
            self.executor_.start(episode_id, task, instruction, time.monotonic(), version, seed)
            self._instruction, self._ready_after = instruction, stamp
            self._episode_stamp, self._clock_peak, self._clock_back_since = stamp, 0.0, None
            self._episode_started_at = time.monotonic()
            self._waiting_since = None
            self.trouble.clear()
            self.controller.ask_again()
            if self._plan and self._plan.weights_version != self.training.version:
                self.get_logger().error(f'episode {episode_id} was configured for weights version '
                                        f'{self._plan.weights_version} but version {self.training.version} is '
                                        'loaded: it ends at once')
                self._finish(False, C.END_ERROR)
                return
        self.get_logger().info(f'episode {episode_id} ({task}): "{instruction}"')
        self._wake.trigger()

    def _plan_episode(self, episode_id: str) -> tuple[int, int]:
        """Set up the episode a trainer configured (its h, sampling policy), or the deployed one;
        returns (weights version, sampling seed) for its stats (lock held)."""
        plan = self.training.take_plan(episode_id) if self.training else None
        self._plan, self._records = plan, []
        self.executor_.config = plan.execution(self._execution) if plan else self._execution
        self._episode_policy = episode_policy(plan, self.policy.model) if plan else None
        version = self.training.version if self.training else 0
        return version, plan.seed if plan else -1

    def _write_rollout(self, metrics) -> None:
        """Write a training episode's rollout where its plan says, before its stats go out."""
        plan = self._plan
        if plan is None or not plan.record_path or plan.sample == 'mean':
            return
        try:
            save_rollout(plan.record_path, episode_rollout(plan, self._episode_policy, metrics, self._records,
                                                           self.executor_.config))
        except (OSError, ValueError) as err:
            self.get_logger().error(f'episode {metrics.episode_id}: cannot write its rollout to '
                                    f'{plan.record_path}: {err}')

    def _finish(self, success: bool, end_reason: str) -> None:
        """End the running episode (lock held): hold the arm, publish and log its stats."""
        self._out_of_steps_at, self._called_for = None, None
        metrics = self.executor_.finish(success, end_reason, time.monotonic())
        self.finished_ids.add(metrics.episode_id)
        self._hold()
        self._write_rollout(metrics)
        self.episode_pub.publish(conv.episode_stats_msg(metrics, self.get_clock().now().to_msg()))
        if self.log is not None:
            self.log.append(metrics)
        self.get_logger().info(
            f'episode {metrics.episode_id} {end_reason}: steps={metrics.steps} '
            f'inference_calls={metrics.inference_calls}')

    def _reject(self, kind: str, reason: str, episode_id: str) -> None:
        """Bad chunk: count and log it, hold the arm and end the episode with end_reason 'error'."""
        self.errors[kind] = self.errors.get(kind, 0) + 1
        self.trouble.error(kind, f'{kind}: {reason}; holding, no command sent')
        with self._lock:
            if self.executor_.active and self.executor_.episode_id == episode_id:
                self._finish(False, C.END_ERROR)

    def _joint_states_lost(self) -> bool:
        """End the episode if joint states stopped arriving, or if this node's clock went back to before
        the episode began (a restarted simulator's /clock), lock held; True if it ended."""
        now = self._now()
        self._clock_peak = max(self._clock_peak, now)
        went_back = (self._episode_stamp and self._clock_peak >= self._episode_stamp
                     and now < self._episode_stamp - self.config.episode.max_observation_age_s)
        if not went_back:
            self._clock_back_since = None
        elif self._clock_back_since is None:
            self._clock_back_since = time.monotonic()   # one reading can be transient: it must last
        if went_back and time.monotonic() - self._clock_back_since > CLOCK_BACK_S:
            self.get_logger().error(
                f'the clock is at {now:.2f}s, before the episode began ({self._episode_stamp:.2f}s): it went back '
                '(a restarted simulator, with use_sim_time); ending the episode')
            self._finish(False, C.END_JOINT_STATES_LOST)
            return True
        last = max(self._joints_received_at or 0.0, self._episode_started_at)
        silent = time.monotonic() - last
        if silent <= self.config.episode.joint_states_timeout_s:
            return False
        self.get_logger().error(
            f'no joint state on {self.config.topics.joint_states} for {silent:.1f}s '
            f'(episode.joint_states_timeout_s {self.config.episode.joint_states_timeout_s}): is the robot '
            'driver / simulator running? ending the episode')
        self._finish(False, C.END_JOINT_STATES_LOST)
        return True

    def _stamp_problem(self, kind: str, msg) -> str | None:
        """Why a message's stamp makes it unusable now (stale, in the future, unset), or None."""
        stamp = conv.to_seconds(msg.header.stamp)
        topic = self._input_topics[kind]
        if stamp == 0.0:
            return f'{topic} has header.stamp 0 (unset): stamp messages with the time they were taken'
        age = self._now() - stamp
        cfg = self.config.episode
        if age > cfg.max_observation_age_s:
            return f'{topic} is stale: {age:.3f}s old (episode.max_observation_age_s {cfg.max_observation_age_s}s)'
        if -age > cfg.max_future_stamp_s:
            return (f'{topic} is stamped {-age:.3f}s in the future (episode.max_future_stamp_s '
                    f'{cfg.max_future_stamp_s}s): its clock and this node\'s disagree (use_sim_time?)')
        return None

    def _observed_since(self, t: float) -> bool:
        """All required inputs have a message stamped at/after ``t`` and not in the future."""
        msgs = self._required_messages()
        horizon = self._now() + self.config.episode.max_future_stamp_s
        return bool(msgs) and all(t <= conv.to_seconds(m.header.stamp) <= horizon for m in msgs.values())

    def _required_messages(self) -> dict:
        msgs = {k: self._latest.get(k) for k in self._input_topics}
        return {} if any(m is None for m in msgs.values()) else msgs

    def _observation(self) -> Observation | None:
        """A validated observation from the latest messages, or None (reason logged per cause)."""
        meta, cfg = self.policy.metadata, self.config
        if not self._observed_since(self._ready_after):
            self._log_waiting()
            return None
        msgs = self._required_messages()
        try:
            for kind, msg in msgs.items():
                problem = self._stamp_problem(kind, msg)
                if problem:
                    raise conv.ObservationError(problem)
            positions, velocities = conv.joint_state_to_arrays(msgs['joints'], cfg.robot.joint_names)
            tiles = [conv.image_to_array(msgs[f'image{i}'], meta.camera_image_size)
                     for i in range(meta.num_cameras)]
            image = (np.concatenate(tiles, axis=1) if len(tiles) > 1 else tiles[0] if tiles
                     else np.zeros((0, 0, 3), np.uint8))
            state = conv.poses_to_environment_state(msgs['poses']) if meta.uses_environment_state else np.zeros(0)
        except conv.ObservationError as err:
            self.errors['observation'] = self.errors.get('observation', 0) + 1
            self.trouble.error(str(err).split(':')[0], f'bad observation: {err}; holding')
            return None
        self.trouble.clear('waiting')
        self._waiting_since = None
        return Observation(image=image, joint_positions=positions, joint_velocities=velocities,
                           environment_state=state, instruction=self._instruction,
                           time=conv.to_seconds(msgs['joints'].header.stamp), step=self.executor_.steps)

    def _log_waiting(self) -> None:
        """Say which inputs the episode has waited for longer than WAITING_GRACE_S (throttled,
        with since when); shorter waits are the normal gap between a window's end and the
        observations taken there."""
        if self._waiting_since is None:
            self._waiting_since = time.monotonic()
        if time.monotonic() - self._waiting_since < WAITING_GRACE_S:
            return
        waiting = []
        for kind, topic in self._input_topics.items():
            msg = self._latest.get(kind)
            if msg is None:
                waiting.append(f'{topic} (nothing received)')
                continue
            problem = self._stamp_problem(kind, msg)
            if problem:
                waiting.append(problem)
            elif conv.to_seconds(msg.header.stamp) < self._ready_after:
                waiting.append(f'{topic} (nothing stamped since the episode started at {self._ready_after:.3f}s)')
        if waiting:
            self.trouble.warning('waiting', f'episode {self.executor_.episode_id} waits for ' + ', '.join(waiting))

    def shutdown(self) -> None:
        """End a running episode as 'stopped' and command a hold."""
        with self._lock:
            if self.executor_.active:
                self._finish(False, C.END_STOPPED)


def main(args=None) -> int:
    return run_node(PolicyNode, 'policy_node', args)


if __name__ == '__main__':
    raise SystemExit(main())
