"""policy_node's side of training: hot weight reloads and per-episode plans from a trainer.

With ``trainer.enabled`` the node offers two services (``topics.load_weights``,
``topics.configure_episode``). LoadWeights swaps the policy's model between episodes, only after
the file's sha256 matched and every tensor loaded into a fresh model (``training.episodes.
load_weights``); a refused load leaves the running weights and version. ConfigureEpisode stores an
``EpisodePlan`` under its episode id; the node's episode START then runs it.
"""
from __future__ import annotations

from collections import OrderedDict

from policytrim_ros.config import ConfigError
from policytrim_ros.srv import ConfigureEpisode, LoadWeights
from policytrim_ros.training.episodes import EpisodePlan, WeightsError, load_weights
from policytrim_ros.training.exploration import ExplorationConfig


class TrainingLink:
    """The services and state of training episodes; ``busy()`` tells whether an episode runs."""

    def __init__(self, node, config, policy, lock, busy):
        if config.policy.backend != 'torch' or config.policy.device != 'cpu':
            raise ConfigError(f'trainer.enabled needs policy.backend torch on policy.device cpu (the trainer samples '
                              'from and reloads the PyTorch model, with the CPU generators of its in-process runs), '
                              f'not {config.policy.backend} on {config.policy.device}')
        self.node, self.policy, self._lock, self._busy = node, policy, lock, busy
        self.max_pending = config.trainer.max_pending_plans
        self.chunk_size = config.execution.chunk_size
        self.version = 0
        self.sha256 = ''   # of the running weights ('' = the start-up checkpoint's)
        self.plans: OrderedDict[str, EpisodePlan] = OrderedDict()
        node.create_service(LoadWeights, config.topics.load_weights, self._on_load_weights)
        node.create_service(ConfigureEpisode, config.topics.configure_episode, self._on_configure)

    def take_plan(self, episode_id: str) -> EpisodePlan | None:
        """The plan configured for ``episode_id`` (removed), or None: the episode runs as deployed."""
        return self.plans.pop(episode_id, None)

    def _on_load_weights(self, request, response):
        log = self.node.get_logger()
        with self._lock:
            response.version, response.sha256 = self.version, self.sha256
            if self._busy():
                response.status = LoadWeights.Response.BUSY
                response.message = 'an episode is running: weights are loaded between episodes'
            elif request.version <= self.version:
                response.status = LoadWeights.Response.NOT_NEWER
                response.message = f'version {request.version} is not newer than the running {self.version}'
            else:
                try:
                    self._swap(load_weights(self.policy.model, request.path, request.sha256))
                except WeightsError as err:
                    response.status = LoadWeights.Response.BAD_FILE
                    response.message = f'kept version {self.version}: {err}'
                else:
                    self.version = response.version = request.version
                    self.sha256 = response.sha256 = request.sha256.lower()
                    response.success, response.status = True, LoadWeights.Response.LOADED
                    response.message = f'loaded version {request.version} from {request.path}'
        if response.success:   # (one rclpy logger call site has one severity)
            log.info(f'load_weights: {response.message}')
        else:
            log.error(f'load_weights: {response.message}')
        return response

    def _swap(self, model) -> None:
        """Run ``model`` from the next episode on (its config may add an efficiency head)."""
        from policytrim_ros.policy.torch_policy import vla_metadata
        self.policy.model, self.policy.config = model.to(self.policy.device), model.config
        self.policy.metadata = vla_metadata(self.policy.metadata.name, model.config)

    def _on_configure(self, request, response):
        try:
            exploration = ExplorationConfig(correlation=request.noise_correlation,
                                            shape=request.noise_shape or 'ramp', waypoints=request.noise_waypoints)
            plan = EpisodePlan(episode_id=request.episode_id, weights_version=request.weights_version,
                               sample=request.sample or 'mean', sampling_seed=request.sampling_seed,
                               n_action_steps=request.n_action_steps, exploration=exploration,
                               forced=tuple(int(c) for c in request.forced), greedy=request.greedy,
                               record_path=request.record_path)
        except ValueError as err:
            response.status, response.message = ConfigureEpisode.Response.INVALID, f'refused: {err}'
            return response
        with self._lock:
            response.status = ConfigureEpisode.Response.INVALID
            if plan.weights_version != self.version:
                response.status = ConfigureEpisode.Response.WRONG_VERSION
                response.message = (f'refused: the episode must run weights version {plan.weights_version} and '
                                    f'version {self.version} is loaded')
            elif not plan.n_action_steps <= self.chunk_size:
                response.message = f'refused: n_action_steps {plan.n_action_steps} > chunk_size {self.chunk_size}'
            elif plan.sample == 'horizon' and not self.policy.metadata.horizons:
                response.message = 'refused: sample horizon needs a policy with an efficiency head'
            else:
                self.plans[plan.episode_id] = plan
                while len(self.plans) > self.max_pending:
                    self.plans.popitem(last=False)
                response.success, response.status = True, ConfigureEpisode.Response.ACCEPTED
                response.message = f'episode {plan.episode_id} will run sample {plan.sample}'
        return response
