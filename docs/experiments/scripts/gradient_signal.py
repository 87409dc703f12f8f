"""Does one iteration's batch of rollouts carry a policy gradient, or only noise?

Rolls out ``--groups`` groups of a PolicyTrim stage config from one checkpoint (as iteration 0 of
that config would, with its exploration noise and rewards), splits the groups into ``--parts``
disjoint sets, and computes each set's GRPO policy gradient at ratio 1 (the loss's gradient at the
first minibatch of an update, without the KL term). Independent sets estimate the same expected
gradient, so their cosine similarity measures the signal: about 0 when the batch is noise (with
millions of parameters two random directions are orthogonal), clearly positive when a gradient step
from one part would also ascend the other's objective.

    .venv/bin/python docs/experiments/scripts/gradient_signal.py \\
        --config docs/experiments/configs/policytrim_wrist_h32_dagger_stage1.yaml \\
        --set base_n_action_steps=32 acceptance_ratio_count=1 --groups 32 --parts 2

Prints a table per part (groups kept, windows, gradient norm), the pairwise cosines, their mean,
and the mean per top-level module (vision, transformer, action_head, ...); writes nothing. The env
and safety limits come from the ROS parameter file (default config/sim.yaml).
"""
from __future__ import annotations

import argparse
import itertools
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

from policytrim_ros import launcher, resources
from policytrim_ros.cli.overrides import with_overrides
from policytrim_ros.config import from_dict, load_yaml
from policytrim_ros.envs.factory import suite_control_dt, task_suite
from policytrim_ros.evaluation.sweep import sim_configs
from policytrim_ros.policy.checkpoint import load_checkpoint
from policytrim_ros.policy.vla.instruction import shared_encoder
from policytrim_ros.training.exploration import ChunkNoise
from policytrim_ros.training.grpo import credited_windows, ppo_clip_loss
from policytrim_ros.training.trainer import (PolicyTrimConfig, iteration_jobs, stage_horizons,
                                             trajectory_rewards)
from policytrim_ros.training.workers import RolloutPool, RolloutSetup


def policy_gradient(model, groups, cfg: PolicyTrimConfig, noise: ChunkNoise) -> tuple[torch.Tensor, int, int]:
    """The flattened gradient of the GRPO surrogate -sum(w A log pi) / sum(w) over ``groups``
    (the PPO-clip loss at ratio 1), the groups kept and the windows in it."""
    data, kept = credited_windows(groups, cfg.grpo.min_group_success_rate, shared_encoder().encode, cfg.grpo.credit_refused)
    model.zero_grad(set_to_none=True)
    if not data:
        return torch.zeros(sum(p.numel() for p in model.parameters())), kept, 0
    n = len(data['chunk'])
    total = data['weight'].sum()
    for i in range(0, n, cfg.grpo.minibatch_size):
        idx = slice(i, i + cfg.grpo.minibatch_size)
        mean = model(data['image'][idx], data['text'][idx], data['state'][idx])
        log_prob = noise.log_prob(model, mean, data['chunk'][idx], data['mask'][idx])
        dims = noise.dims(data['mask'][idx]) * data['chunk'].shape[-1] if cfg.grpo.log_ratio == 'mean' else None
        out = ppo_clip_loss(log_prob, log_prob.detach(), data['advantage'][idx], data['weight'][idx],
                            cfg.grpo.clip, dims=dims)
        # ppo_clip_loss normalises the weights per minibatch: rescale to the whole batch's
        (out.pg_loss * data['weight'][idx].sum() / total).backward()
    grad = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).flatten() for p in model.parameters()])
    return grad, kept, n


def module_sizes(model) -> dict[str, int]:
    """Parameters per top-level module, in ``model.parameters()`` order."""
    sizes: dict[str, int] = {}
    for name, parameter in model.named_parameters():
        sizes[name.split('.')[0]] = sizes.get(name.split('.')[0], 0) + parameter.numel()
    return sizes


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    parser.add_argument('--config', type=Path, required=True, help='a PolicyTrim stage config (YAML)')
    parser.add_argument('--set', nargs='*', default=[], metavar='KEY=VALUE', help='overrides, as policytrim train')
    parser.add_argument('--checkpoint', default=None, help="the policy to probe (default: the config's init)")
    parser.add_argument('--groups', type=int, default=32, help='groups to roll out (default 32)')
    parser.add_argument('--parts', type=int, default=2, help='disjoint sets of groups to compare (default 2)')
    parser.add_argument('--params', default=None, help='ROS parameter file (default config/sim.yaml)')
    args = parser.parse_args(argv)
    if args.parts < 2 or args.groups < args.parts:
        parser.error(f'need --parts >= 2 and --groups >= --parts (got {args.parts}, {args.groups})')
    cfg = from_dict(PolicyTrimConfig, with_overrides(load_yaml(args.config), args.set))
    cfg = replace(cfg, groups_per_iteration=args.groups)
    torch.set_num_threads(1)
    model, model_cfg, _ = load_checkpoint(resources.resolve(args.checkpoint or cfg.init))
    if cfg.log_std is not None:
        with torch.no_grad():
            model.log_std_param.fill_(cfg.log_std)
    env, _, safety = sim_configs(launcher.params_file(args.params), cfg.tasks)
    setup = RolloutSetup(model_cfg, env, safety, cfg.max_episode_steps, suite_control_dt(task_suite(cfg.tasks), env),
                         tuple(cfg.tasks), exploration=cfg.exploration)
    jobs = iteration_jobs(cfg, 0, stage_horizons(cfg, model_cfg.chunk_size))
    with RolloutPool(setup, cfg.workers) as pool:
        rollouts = pool.collect(model.state_dict(), jobs)
    groups = [rollouts[i:i + cfg.group_size] for i in range(0, len(rollouts), cfg.group_size)]
    scored = [(g, trajectory_rewards(cfg, g, model_cfg.chunk_size)) for g in groups]
    noise = ChunkNoise(cfg.exploration)
    grads = []
    print(f'{len(groups)} groups of {cfg.group_size}, sampled SR {np.mean([r.metrics.success for r in rollouts]):.2f}')
    print(f"{'part':>4} {'groups':>6} {'kept':>4} {'windows':>7} {'|grad|':>10}")
    for k in range(args.parts):
        grad, kept, windows = policy_gradient(model, scored[k::args.parts], cfg, noise)
        grads.append(grad)
        print(f'{k:>4} {len(scored[k::args.parts]):>6} {kept:>4} {windows:>7} {grad.norm().item():>10.4g}')
    cosines = []
    for a, b in itertools.combinations(range(args.parts), 2):
        denominator = (grads[a].norm() * grads[b].norm()).item()
        cosines.append((grads[a] @ grads[b]).item() / denominator if denominator > 0 else float('nan'))
        print(f'cosine(part {a}, part {b}) = {cosines[-1]:+.4f}')
    valid = [c for c in cosines if not np.isnan(c)]
    if not valid:
        print('no two parts carried a gradient (every group all-fail, below the filter, or all-success)')
        return
    print(f'mean pairwise cosine {np.mean(valid):+.4f} (std {np.std(valid):.4f}, {len(valid)} pairs)')
    start = 0
    for module, size in module_sizes(model).items():   # where in the network the signal lies
        part = [g[start:start + size] for g in grads]
        start += size
        pairs = [(part[a] @ part[b]).item() / (part[a].norm() * part[b].norm()).item()
                 for a, b in itertools.combinations(range(args.parts), 2) if part[a].norm() * part[b].norm() > 0]
        if pairs:
            print(f'  {module:<18} {size:>9} parameters: mean pairwise cosine {np.mean(pairs):+.4f}')


if __name__ == '__main__':
    main()
