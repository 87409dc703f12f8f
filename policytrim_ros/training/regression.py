"""The supervised step loop shared by behaviour cloning (``training.bc``) and offline fine-tuning
(``training.offline``): image-shift augmentation, the learning-rate schedule, one optimizer step,
its scalar rows, and the resumable checkpoint (weights, optimizer and RNG states) written as one
atomic save."""
from __future__ import annotations

import math
import time
from pathlib import Path

import torch

from policytrim_ros.policy.checkpoint import load_trainer_state, save_checkpoint, save_trainer_state
from policytrim_ros.training.runstate import save_atomically


def shift_images(images: torch.Tensor, pad: int, generator: torch.Generator) -> torch.Tensor:
    """Random translation by up to ``pad`` pixels (edge-replicated), per image; (B, h, w, 3) uint8."""
    b, h, w, _ = images.shape
    padded = torch.nn.functional.pad(images.permute(0, 3, 1, 2).float(), (pad,) * 4, mode='replicate')
    dx, dy = (torch.randint(0, 2 * pad + 1, (b,), generator=generator) for _ in range(2))
    out = torch.stack([padded[i, :, dy[i]:dy[i] + h, dx[i]:dx[i] + w] for i in range(b)])
    return out.permute(0, 2, 3, 1).to(torch.uint8)


def lr_factor(step: int, warmup_steps: int, steps: int) -> float:
    """Linear warm-up over ``warmup_steps``, then a cosine from 1 down to 0.1 at ``steps``."""
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    progress = (step - warmup_steps) / max(1, steps - warmup_steps)
    return 0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def scheduler(optimizer, warmup_steps: int, steps: int, start: int):
    """``lr_factor``'s schedule, continued from step ``start`` (a resumed run)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: lr_factor(s, warmup_steps, steps),
                                             last_epoch=start - 1)


def optimize(model: torch.nn.Module, optimizer, schedule, loss: torch.Tensor, grad_clip: float) -> torch.Tensor:
    """One step on ``loss``: backward, gradient-norm clip, optimizer and schedule step; returns the
    gradient norm before clipping (a tensor: reading it syncs a GPU, so only ``log_step`` does)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), grad_clip)
    optimizer.step()
    schedule.step()
    return grad_norm


def log_step(log, writer, done: int, loss: torch.Tensor, grad_norm: torch.Tensor, schedule, started: float) -> None:
    """The scalar rows of step ``done`` (loss, grad_norm, lr), flushed."""
    elapsed = round(time.monotonic() - started, 1)
    for name, value in (('loss', loss.item()), ('grad_norm', grad_norm.item()), ('lr', schedule.get_last_lr()[0])):
        writer.writerow([done, name, f'{value:.6g}', elapsed])
    log.flush()


def save_state(out: Path, step: int, model, optimizer, rng, generator, meta: dict, saved=None,
               extra: dict | None = None) -> None:
    """checkpoints/step_<n> and last/ (with the optimizer and RNG states to resume from) in one atomic
    save (``runstate.save_atomically``): a kill leaves the previous or this state, never a mix.

    saved: the model whose weights the checkpoints hold (default ``model``; e.g. a weight average);
    extra: more {folder: writer} of the same save."""
    saved = model if saved is None else saved

    def last(directory: Path) -> None:
        save_checkpoint(directory, saved, model.config, meta)
        save_trainer_state(directory, optimizer, {'step': step, 'numpy_rng': rng.bit_generator.state},
                           {'torch_rng': torch.get_rng_state(), 'augment_rng': generator.get_state()})

    save_atomically(out, {f'checkpoints/step_{step:06d}': lambda d: save_checkpoint(d, saved, model.config, meta),
                          'last': last, **(extra or {})})


def restore_state(out: Path, optimizer, rng, generator) -> int:
    """Load the optimizer and RNG states ``save_state`` wrote into last/; return the step to continue from."""
    meta, tensors = load_trainer_state(out / 'last', optimizer)
    torch.set_rng_state(tensors['torch_rng'])
    generator.set_state(tensors['augment_rng'])
    rng.bit_generator.state = meta['numpy_rng']
    return meta['step']
