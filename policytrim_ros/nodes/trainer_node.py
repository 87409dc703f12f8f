"""trainer_node: PolicyTrim fine-tuning episodes on the robot (or the simulator) through policy_node.

The GRPO loop is ``policytrim train``'s (``training.trainer.train_policytrim``, in a thread of this
process); only where its episodes run differs: each rollout job becomes one episode of the running
policy_node (started with ``trainer.enabled``), as on a real arm:

1. new weights after an update: written to ``<out_dir>/weights/<sha256>.safetensors`` and
   hot-reloaded into policy_node (LoadWeights: versioned, sha256-checked, rolled back on failure)
   before the next episode;
2. ConfigureEpisode tells policy_node what the episode runs: the weights version, sampling on and
   its seed, h, and where to write the rollout;
3. the reset: the simulator's ``sim/reset_episode`` service (the embedded sim; a Gazebo world needs one of its own), or on a real
   arm an operator prompt (``reset: operator``): the operator resets the scene and calls the
   ``trainer/reset_done`` service, this node announces the episode START, and the outcome comes
   from a detector's episode/event or from the operator's ``trainer/outcome`` call;
4. the episode's EpisodeStats (with its weights version) and its rollout file end it. Episodes the
   robot side cut short (a simulator or driver that died, a node that stopped) are run again.

Every finished rollout is persisted (``training.episodes.EpisodeStore``, keyed by the weights'
sha256 and the job) before the trainer uses it, and the trainer's state is saved every
``checkpoint_every`` iterations: after a kill of any process at any instant, a restart continues the
run exactly, with no episode lost or counted twice.
"""
from __future__ import annotations

import secrets
import shutil
import threading
import time
from dataclasses import dataclass, field, replace
from pathlib import Path

from rclpy.node import Node
from std_srvs.srv import SetBool, Trigger

from policytrim_ros import constants as C
from policytrim_ros import launcher
from policytrim_ros.config import ConfigError, from_dict, load_yaml
from policytrim_ros.msg import EpisodeEvent, EpisodeStats
from policytrim_ros.nodes import conversions as conv
from policytrim_ros.nodes.params import declare_config
from policytrim_ros.nodes.runtime import LATCHED, RELIABLE, run_node
from policytrim_ros.policy.checkpoint import WEIGHTS_FILE, file_sha256, save_checkpoint
from policytrim_ros.policy.vla.modeling_vla import VLAModel
from policytrim_ros.srv import ConfigureEpisode, LoadWeights, ResetEpisode
from policytrim_ros.training.episodes import EpisodeStore, is_scorable, load_rollout
from policytrim_ros.training.robots import EpisodeLinkConfig   # the core's: Ray robot workers use it too

KINDS = ('policytrim', 'horizon')
CALL_RETRY_S = 5.0
"""Seconds to wait for a service's answer before the request is sent again."""


def task_instruction(task: str) -> str:
    """The instruction the policy was trained with for ``task`` (the arm's or Meta-World's)."""
    from policytrim_ros.robots.arm import TASK_INSTRUCTIONS
    if task in TASK_INSTRUCTIONS:
        return TASK_INSTRUCTIONS[task]
    from policytrim_ros.robots.metaworld_tasks import check_task
    return check_task(task).instruction


@dataclass(frozen=True)
class TrainingRunConfig:
    """The run.

    kind: policytrim (Stage 1 or 2 of the VLA: ``policytrim train``) or horizon (the efficiency head
        on the frozen VLA: ``policytrim train-horizon``).
    config: YAML of that trainer's config (config/training/policytrim.yaml, horizon.yaml); its
        out_dir holds the run (a run there continues where it stopped).
    overrides: KEY=VALUE entries over that file, dotted keys for nested fields (['iterations=2']).
    stage: 1 or 2 with kind policytrim (Stage 2 needs the config's n_action_steps and step_budget).
    params: ROS parameter file whose policy_node safety limits and execution the run records,
        as ``policytrim train --params`` does (''= the installed config/sim.yaml).
    """

    kind: str = 'policytrim'
    config: str = ''
    overrides: tuple[str, ...] = ()
    stage: int = 1
    params: str = ''

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"run.kind '{self.kind}' must be one of {list(KINDS)}")
        if self.stage not in (1, 2):
            raise ValueError(f'run.stage ({self.stage}) must be 1 or 2')


@dataclass(frozen=True)
class TrainerNodeConfig:
    """Everything trainer_node reads from its parameters."""

    run: TrainingRunConfig = field(default_factory=TrainingRunConfig)
    episodes: EpisodeLinkConfig = field(default_factory=EpisodeLinkConfig)


class RobotSideError(RuntimeError):
    """The robot side cannot run the run's episodes (a node missing, weights refused, no outcome)."""


class RosRollouts:
    """``RolloutPool.collect`` over ROS: each job one episode of policy_node, persisted when done."""

    def __init__(self, node: Node, config: EpisodeLinkConfig, run_dir: Path, stop: threading.Event):
        self.node, self.config, self.stop = node, config, stop
        self.store = EpisodeStore(run_dir / 'episodes')
        self.weights_dir = run_dir / 'weights'
        self.weights_dir.mkdir(parents=True, exist_ok=True)
        self.inbox = run_dir / 'episodes' / 'incoming'
        self.inbox.mkdir(parents=True, exist_ok=True)
        for orphan in self.inbox.glob('*'):
            orphan.unlink()   # rollouts of an earlier process's episodes, never counted
        self.tag = secrets.token_hex(3)   # this process's episodes: a restarted trainer never reuses an id
        self.count = 0
        self.ended_at = 0.0               # monotonic end of the last episode
        self.sha = self.path = None       # the weights the jobs run
        self.loaded_sha, self.version = None, 0
        self.stats: dict[str, EpisodeStats] = {}
        self.reset_done = threading.Event()
        self.awaiting: tuple[str, str] | None = None   # ('reset' | 'outcome', episode id) the operator owes
        self.outcome: bool | None = None
        self.outcome_ready = threading.Event()
        self.load_client = node.create_client(LoadWeights, config.load_weights)
        self.configure_client = node.create_client(ConfigureEpisode, config.configure_episode)
        self.reset_client = (node.create_client(ResetEpisode, config.reset_service)
                             if config.reset == 'service' else None)
        node.create_subscription(EpisodeStats, config.episode_stats, self._on_stats, RELIABLE)
        if config.reset == 'operator':
            self.event_pub = node.create_publisher(EpisodeEvent, config.episode_event, LATCHED)
            # the prompts name them resolved: under a robot worker's namespace they are /arm1/trainer/...
            self.reset_done_service = node.create_service(Trigger, 'trainer/reset_done', self._on_reset_done)
            self.outcome_service = node.create_service(SetBool, 'trainer/outcome', self._on_outcome)

    # -- RolloutPool's interface ---------------------------------------------------------------
    def __call__(self, setup):
        """Bind to the trainer's RolloutSetup (model config, sample, exploration): the trainers'
        ``rollouts`` argument."""
        self.setup = setup
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def collect(self, weights: dict | None, jobs: list) -> list:
        if weights is not None:
            self._write_weights(weights)
        elif self.sha is None:
            raise ValueError('the first collect needs weights')
        rollouts = []
        for job in jobs:
            key = EpisodeStore.key(self.sha, job, self.setup)
            rollout = self.store.get(key)   # run before a restart: never twice
            if rollout is None:
                rollout = self._run(job)
                self.store.put(key, rollout)   # persisted before the trainer sees it
            rollouts.append(rollout)
        return rollouts

    # -- weights -------------------------------------------------------------------------------
    def _write_weights(self, weights: dict) -> None:
        """The weights as a checkpoint directory <weights>/<sha256 of model.safetensors>/ (its config
        carries the model's shape, e.g. the efficiency head the horizon trainer adds)."""
        model = VLAModel(self.setup.model)
        model.load_state_dict(weights)
        staging = self.weights_dir / 'staging'
        shutil.rmtree(staging, ignore_errors=True)
        save_checkpoint(staging, model, model.config, {'trainer_node': 'hot reload'})
        sha = file_sha256(staging / WEIGHTS_FILE)
        path = self.weights_dir / sha
        if not path.exists():
            staging.replace(path)
        for old in self.weights_dir.iterdir():
            if old != path:
                shutil.rmtree(old, ignore_errors=True)   # policy_node read it already (or gets the new one)
        self.sha, self.path = sha, path

    def _ensure_weights(self) -> None:
        """Make policy_node run self.sha (a restarted node runs its start-up weights, version 0)."""
        if self.loaded_sha == self.sha:
            return
        version = self.version + 1
        deadline = time.monotonic() + self.config.episode_timeout_s
        while True:
            response = self._call(self.load_client, LoadWeights.Request(path=str(self.path), version=version,
                                                                        sha256=self.sha), 'load_weights')
            if response.status == LoadWeights.Response.BUSY and time.monotonic() < deadline:
                time.sleep(0.2)                  # an episode of an earlier trainer process is ending
                self.ended_at = time.monotonic()   # settle after it too: its hold must not reach the next episode
            elif response.status == LoadWeights.Response.LOADED or (
                    response.status == LoadWeights.Response.NOT_NEWER and response.sha256 == self.sha):
                self.loaded_sha, self.version = self.sha, response.version
                self.node.get_logger().info(f'policy_node runs weights version {self.version} ({self.sha[:12]})')
                return
            elif response.status == LoadWeights.Response.NOT_NEWER:
                version = response.version + 1   # it ran newer versions than this process knows of
            else:
                raise RobotSideError(f'policy_node refused the weights {self.path}: {response.message}')

    # -- one episode ---------------------------------------------------------------------------
    def _run(self, job):
        log = self.node.get_logger()
        for attempt in range(1, self.config.max_attempts + 1):
            self.count += 1
            episode_id = f'train-{self.tag}-{self.count:05d}'
            record = self.inbox / f'{episode_id}.safetensors'
            self._ensure_weights()
            request = ConfigureEpisode.Request(
                episode_id=episode_id, weights_version=self.version, sample=self.setup.sample,
                sampling_seed=job.noise_seed, n_action_steps=job.n_action_steps, record_path=str(record),
                forced=list(job.forced), greedy=job.greedy)
            exploration = self.setup.exploration
            request.noise_correlation, request.noise_shape = exploration.correlation, exploration.shape
            request.noise_waypoints = exploration.waypoints
            response = self._call(self.configure_client, request, 'configure_episode')
            if not response.success:
                if response.status == ConfigureEpisode.Response.WRONG_VERSION:
                    self.loaded_sha = None   # policy_node restarted with other weights: reload them
                    log.warning(f'{episode_id}: {response.message}; reloading the weights')
                    continue
                raise RobotSideError(f'policy_node refused episode {episode_id}: {response.message}')
            stats = self._episode(job, episode_id)
            self.stats.clear()   # stats of other ids: earlier attempts' and other processes' episodes
            if stats is None:
                log.warning(f'{episode_id} ({job.task}, seed {job.seed}): no EpisodeStats (attempt {attempt}); '
                            'running it again')
                self.loaded_sha = None
                continue
            metrics = conv.episode_stats_from_msg(stats)
            if metrics.weights_version != self.version or not is_scorable(metrics):
                log.warning(f'{episode_id} ended {metrics.end_reason} under weights version '
                            f'{metrics.weights_version} (attempt {attempt}): not the policy\'s outcome, running it again')
                self.loaded_sha = None if metrics.weights_version != self.version else self.loaded_sha
                record.unlink(missing_ok=True)
                continue
            try:
                rollout = load_rollout(record)
            except ValueError as err:
                log.warning(f'{episode_id}: {err} (attempt {attempt}); running it again')
                continue
            record.unlink()
            if self.config.reset == 'operator' and metrics.end_reason == C.END_MAX_STEPS:
                rollout = replace(rollout, metrics=replace(rollout.metrics, success=self._operator_outcome(episode_id)))
            return rollout
        raise RobotSideError(f'episode of {job.task} seed {job.seed} did not finish in '
                             f'{self.config.max_attempts} attempts (see the warnings above)')

    def _episode(self, job, episode_id: str) -> EpisodeStats | None:
        """Reset, start and wait for the episode's stats (None: it never ended)."""
        cfg = self.config
        if cfg.reset == 'service':
            time.sleep(max(0.0, self.ended_at + cfg.settle_s - time.monotonic()))
            response = self._call(self.reset_client, ResetEpisode.Request(task=job.task, seed=job.seed,
                                                                          episode_id=episode_id), 'reset')
            if not response.success:
                raise RobotSideError(f'reset of {episode_id} failed: {response.message}')
        else:
            self._operator_reset(job, episode_id)
        deadline = time.monotonic() + cfg.episode_timeout_s
        publishers, gone_since = self._stats_publishers(), None
        while time.monotonic() < deadline and not self.stop.is_set():
            stats = self.stats.pop(episode_id, None)
            if stats is not None:
                self.ended_at = time.monotonic()
                return stats
            now = self._stats_publishers()
            if now - publishers:   # a new policy_node process: the one running the episode is gone
                return None
            if not now:            # policy_node died and no other came up yet
                gone_since = gone_since or time.monotonic()
                if time.monotonic() - gone_since > 2.0:
                    return None
            else:
                gone_since = None
            time.sleep(0.02)
        return None

    def _stats_publishers(self) -> set[bytes]:
        """The endpoints publishing EpisodeStats (a restarted policy_node has new ones)."""
        return {bytes(info.endpoint_gid) for info in self.node.get_publishers_info_by_topic(self.config.episode_stats)}

    def _operator_reset(self, job, episode_id: str) -> None:
        """A person resets the arm and the scene, says so, and this node announces the START."""
        self.reset_done.clear()
        self.awaiting = ('reset', episode_id)
        while True:
            self.node.get_logger().warning(
                f'RESET the scene for task {job.task} (initial state {job.seed}, episode {episode_id}), then: '
                f'ros2 service call {self.reset_done_service.service_name} std_srvs/srv/Trigger')
            if self.reset_done.wait(self.config.operator_timeout_s):
                self.awaiting = None
                break
            if self.stop.is_set():
                raise RobotSideError('stopped')
        msg = EpisodeEvent(event=EpisodeEvent.START, episode_id=episode_id, task=job.task,
                           instruction=task_instruction(job.task))
        msg.header.stamp = self.node.get_clock().now().to_msg()
        self.event_pub.publish(msg)

    def _operator_outcome(self, episode_id: str) -> bool:
        """The operator's verdict on an episode no detector judged (it ran to its step limit)."""
        self.outcome_ready.clear()
        self.awaiting = ('outcome', episode_id)
        while True:
            self.node.get_logger().warning(
                f'episode {episode_id} ran to its step limit with no success detector: did it succeed? '
                f"ros2 service call {self.outcome_service.service_name} std_srvs/srv/SetBool '{{data: true}}' (or false)")
            if self.outcome_ready.wait(self.config.outcome_timeout_s):
                self.awaiting = None
                return bool(self.outcome)
            if self.stop.is_set():
                raise RobotSideError('stopped')

    # -- callbacks and plumbing ----------------------------------------------------------------
    def _on_stats(self, msg: EpisodeStats) -> None:
        self.stats[msg.episode_id] = msg

    def _on_reset_done(self, request, response):
        waiting = self.awaiting
        if waiting is None or waiting[0] != 'reset':
            response.message = 'no episode waits for a reset now (see the log\'s prompts)'
            return response
        self.reset_done.set()
        response.success, response.message = True, f'starting episode {waiting[1]}'
        return response

    def _on_outcome(self, request, response):
        waiting = self.awaiting
        if waiting is None or waiting[0] != 'outcome':
            response.message = 'no episode waits for an outcome now (see the log\'s prompts)'
            return response
        self.outcome = bool(request.data)
        self.outcome_ready.set()
        response.success, response.message = True, f'outcome {"success" if request.data else "failure"}'
        return response

    def _call(self, client, request, what: str):
        """Call a service, waiting for it to appear (policy_node or the sim may be restarting)."""
        deadline = time.monotonic() + self.config.discovery_timeout_s
        while not client.service_is_ready():
            if self.stop.is_set():
                raise RobotSideError('stopped')
            if time.monotonic() > deadline:
                raise RobotSideError(f'service {client.srv_name} ({what}) did not appear in '
                                     f'{self.config.discovery_timeout_s}s: is everything launched with the '
                                     'same ROS_DOMAIN_ID, and policy_node with trainer.enabled?')
            time.sleep(0.05)
        # A server that has not yet matched this client's response reader drops the response (a
        # restarted client, rmw_fastrtps): send again. Every request here is safe to repeat.
        while True:
            future = client.call_async(request)
            done = threading.Event()
            future.add_done_callback(lambda _: done.set())
            if done.wait(CALL_RETRY_S) and future.result() is not None:
                return future.result()
            client.remove_pending_request(future)
            if self.stop.is_set():
                raise RobotSideError('stopped')
            if time.monotonic() > deadline:
                raise RobotSideError(f'service {client.srv_name} ({what}) did not answer in '
                                     f'{self.config.discovery_timeout_s}s')
            self.node.get_logger().warning(f'{client.srv_name} did not answer in {CALL_RETRY_S}s; asking again')


class TrainerNode(Node):
    """Runs ``train_policytrim`` (or ``train_horizon_head``) in a thread with its episodes on the
    robot side; exits when done."""

    def __init__(self):
        super().__init__('trainer_node')
        cfg = declare_config(self, TrainerNodeConfig)
        if not cfg.run.config:
            raise ConfigError('run.config must name the training YAML (e.g. config/training/policytrim.yaml)')
        from policytrim_ros.cli.overrides import with_overrides
        from policytrim_ros.evaluation.sweep import sim_configs
        values = with_overrides(load_yaml(cfg.run.config), list(cfg.run.overrides))
        if cfg.run.kind == 'horizon':
            from policytrim_ros.training.horizon_trainer import HorizonTrainConfig, train_horizon_head
            self.training, self.trainer = from_dict(HorizonTrainConfig, values), train_horizon_head
        else:
            from policytrim_ros.training.trainer import PolicyTrimConfig, train_policytrim
            self.training = from_dict(PolicyTrimConfig, {**values, 'stage': cfg.run.stage})
            self.trainer = train_policytrim
        if self.training.rollouts.engine != 'local':   # not silently ignored: this node's episodes are the robot's
            raise ConfigError(f"rollouts.engine '{self.training.rollouts.engine}' is for `policytrim train`: "
                              'trainer_node runs its episodes through policy_node (leave rollouts out)')
        self.env, execution, self.safety = sim_configs(launcher.params_file(cfg.run.params or None),
                                                       self.training.tasks)
        if execution.max_episode_steps != self.training.max_episode_steps:
            raise ConfigError(f'the training config\'s max_episode_steps ({self.training.max_episode_steps}) differs '
                              f'from policy_node\'s execution.max_episode_steps ({execution.max_episode_steps}) in '
                              f'{cfg.run.params or "the installed config/sim.yaml"}: rewards would count steps '
                              'against another limit than the episodes ran with')
        self.done, self.exit_code = False, 0
        self.stop = threading.Event()
        self.rollouts = RosRollouts(self, cfg.episodes, Path(self.training.out_dir), self.stop)
        self._thread = threading.Thread(target=self._train, daemon=True)
        self._thread.start()

    def _train(self) -> None:
        try:
            final = self.trainer(self.training, self.env, self.safety, resume=True,   # continues a run in out_dir
                                 progress=False, rollouts=self.rollouts)
            self.get_logger().info(f'training done: {final}')
        except (RobotSideError, ConfigError, ValueError, FileExistsError) as err:
            self.get_logger().error(f'training stopped: {err}')
            self.exit_code = 1
        finally:
            self.done = True

    def shutdown(self) -> None:
        self.stop.set()


def main(args=None) -> int:
    return run_node(TrainerNode, 'trainer_node', args)


if __name__ == '__main__':
    raise SystemExit(main())
