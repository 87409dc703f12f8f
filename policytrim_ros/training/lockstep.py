"""Lockstep rollouts: one process steps several envs and answers the inference calls that fall due
together with one batched forward of the model.

Each env runs its job's episode as ``execution.episode.play_episode`` (a generator that yields when
it needs a chunk). A round asks every running episode for its pending call, encodes each
observation with the episode's own policy, runs the model once on the stacked inputs, and hands
each episode its row: the policy draws its noise (or its h) from its own generator, so a job's
draws do not depend on its batch. The envs then execute their windows (of any h) until each needs
its next call or ends; an env whose episode ended takes the next job, in job order.

Batching changes no rollout: ``batch_invariant`` makes the model's per-sample layers compute each
row alone, and the rest of the forward (convolutions, the transformer's token-wise layers) gives
a row the same bits in a batch of any size on the CPUs measured (docs/experiments.md, section 5);
``test/unit/test_lockstep.py`` pins the outcome and the chunks (to 1e-5) against one-at-a-time
rollouts.
"""
from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

import numpy as np
import torch
from torch import nn

from policytrim_ros.execution.executor import ChunkRecord
from policytrim_ros.execution.metrics import EpisodeMetrics
from policytrim_ros.policy.base import Observation, PolicyInputError

Job = TypeVar('Job')
Result = TypeVar('Result')
Episode = Generator[Observation, Any, tuple[EpisodeMetrics, list[ChunkRecord]]]


class BatchablePolicy(Protocol):
    """A policy whose inference call splits into per-episode ``encode`` and ``decide`` around a
    ``forward`` that takes a batch (``SamplingVLAPolicy``, ``HorizonSamplingPolicy``)."""

    def reset(self) -> None: ...

    def encode(self, observation: Observation) -> tuple[np.ndarray, ...]: ...

    def forward(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]: ...

    def decide(self, observation: Observation, inputs: tuple[np.ndarray, ...],
               outputs: tuple[torch.Tensor, ...]) -> tuple[np.ndarray, int | None]: ...


@dataclass
class Started:
    """A job begun on an env: its episode (``play_episode``, not yet started), the policy that
    answers its calls, and ``finish(metrics, records)`` -> the job's result."""

    episode: Episode
    policy: BatchablePolicy
    finish: Callable[[EpisodeMetrics, list[ChunkRecord]], Any]


def run_lockstep(envs: Sequence, jobs: Sequence[Job], start: Callable[[Any, Job], Started]) -> list:
    """The results of ``jobs`` (in job order), run on ``envs`` in lockstep.

    start(env, job): begins ``job`` on ``env``. The episodes' policies must share one model: a
    round's forward is the first pending policy's, on every pending episode's inputs. A policy that
    cannot use its observation (PolicyInputError) ends its own episode only, as in ``run_episode``.
    """
    results: list = [None] * len(jobs)
    queue = deque(enumerate(jobs))
    running: dict[int, tuple[int, Started, Observation]] = {}   # env slot -> (job index, job, pending call)

    def begin(slot: int) -> None:
        if queue:
            index, job = queue.popleft()
            started = start(envs[slot], job)
            started.policy.reset()
            running[slot] = (index, started, next(started.episode))

    def answer(slot: int, reply) -> None:
        index, started, _ = running[slot]
        try:
            call = started.episode.throw(reply) if isinstance(reply, Exception) else started.episode.send(reply)
            running[slot] = (index, started, call)
        except StopIteration as end:
            results[index] = started.finish(*end.value)
            del running[slot]
            begin(slot)

    for slot in range(min(len(envs), len(jobs))):
        begin(slot)
    while running:
        slots = sorted(running)
        replies: dict[int, object] = {}
        inputs: dict[int, tuple[np.ndarray, ...]] = {}
        for slot in slots:
            _, started, observation = running[slot]
            try:
                inputs[slot] = started.policy.encode(observation)
            except PolicyInputError as err:
                replies[slot] = err
        if inputs:
            batch = [torch.from_numpy(np.concatenate(parts)) for parts in zip(*inputs.values())]
            with torch.inference_mode():
                outputs = running[next(iter(inputs))][1].policy.forward(*batch)
                for row, slot in enumerate(inputs):
                    _, started, observation = running[slot]
                    rows = tuple(out[row:row + 1] for out in outputs)
                    replies[slot] = started.policy.decide(observation, inputs[slot], rows)
        for slot in slots:   # in env order: the envs that end now take the next jobs in this order
            answer(slot, replies[slot])
    return results


def _row_by_row(module: nn.Module, forward: Callable) -> Callable:
    def rows(x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or x.shape[0] == 1:
            return forward(x)
        return torch.cat([forward(x[i:i + 1]) for i in range(x.shape[0])])
    return rows


def batch_invariant(model: nn.Module) -> nn.Module:
    """Make ``model``'s Linear and LayerNorm layers compute a (B, F) input (one row per sample) one
    row at a time, and return it. A (1, F) matrix product takes another kernel than a (B, F) one
    (matrix-vector), so a sample's bits would depend on its batch; the cost is nil (these layers
    are a few small projections). Inputs with more dimensions (tokens) are unchanged. For a
    rollout worker's own copy of the model: training keeps the plain layers."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.LayerNorm)):
            module.forward = _row_by_row(module, type(module).forward.__get__(module))
    return model
