"""The 50 Meta-World v3 tasks by name: an instruction each, and what our env does differently per task.

One row per task of ``metaworld.env_dict.ALL_V3_ENVIRONMENTS`` (Meta-World 3.1.1's MT50). The
instructions of reach-v3, push-v3 and pick-place-v3 are the ones the shipped Meta-World
checkpoints were trained on; the other 47 follow the task descriptions of the Meta-World paper
(Yu et al., 2019, appendix), written for the v3 scenes (what the objects are, where the goal is).
Nothing here imports ``metaworld``.
"""
from __future__ import annotations

from dataclasses import dataclass

from policytrim_ros.config import close_matches, suggest
from policytrim_ros.robots import UnknownTaskError


@dataclass(frozen=True)
class MetaWorldTask:
    """A Meta-World task: its instruction and what ``MetaWorldEnv`` does differently for it.

    instruction: the natural-language instruction observations carry (distinct per task: the
        suite expert recognises the task from it).
    randomized: 'object' (rand_vec[0:2], the object's xy) or 'goal' (rand_vec[3:5], the goal's xy):
        the spot the layout noise moves. Only the tasks with a spot here get the object-side
        disturbances (layout offset, friction and mass of ``objGeom``, kicks); None: the variant's
        layout as Meta-World samples it, and only the hand-side disturbances (actuation, sensor
        and image noise).
    fixture: Meta-World places this task's fixture (door, drawer, button box, ...) by moving a
        body of the model at reset, which the physics state (``mj_getState``) does not carry; the
        env's ``environment_state`` then ends with the variant's rand_vec, so that a planner can
        rebuild the scene.
    step_limit: control steps an episode of this task gets at least, for the 9 tasks whose scripted
        expert needs more than the 150-step default (``config/sim.yaml``) in over 5 % of its successes:
        the smallest multiple of 50 at or above the 95th percentile of its successful episodes
        (closed loop, default ``MetaWorldConfig``, demonstration seeds 0-49, 500-step cap; measured
        with ``bench/metaworld_experts.py``, docs/experiments.md "Meta-World: all 50 tasks"). None:
        the configured limit. ``policytrim eval`` and ``policytrim collect`` apply it
        (``envs.factory.task_step_limit``); training rollouts keep their configured limit.
    """

    instruction: str
    randomized: str | None = None
    fixture: bool = False
    step_limit: int | None = None

    def __post_init__(self) -> None:
        if not self.instruction.strip():
            raise ValueError('instruction must not be empty')
        if self.randomized not in (None, 'object', 'goal'):
            raise ValueError(f"randomized ({self.randomized!r}) must be 'object', 'goal' or None")
        if self.step_limit is not None and not 1 <= self.step_limit <= 500:
            raise ValueError(f"step_limit ({self.step_limit}) must be in [1, 500] (Meta-World's max_path_length)")


METAWORLD_TASKS: dict[str, MetaWorldTask] = {
    'reach-v3': MetaWorldTask('reach the red target', 'goal'),
    'push-v3': MetaWorldTask('push the puck to the green goal', 'object'),
    'pick-place-v3': MetaWorldTask('pick up the puck and place it at the blue goal', 'object'),
    'assembly-v3': MetaWorldTask('pick up the nut and place it onto the peg', fixture=True, step_limit=300),
    'basketball-v3': MetaWorldTask('pick up the basketball and dunk it into the hoop', fixture=True),
    'bin-picking-v3': MetaWorldTask('pick up the block from one bin and place it into the other bin', step_limit=250),
    'box-close-v3': MetaWorldTask('pick up the lid and place it on the box to close it', fixture=True, step_limit=200),
    'button-press-topdown-v3': MetaWorldTask('press the button down from above', fixture=True),
    'button-press-topdown-wall-v3': MetaWorldTask('reach past the wall and press the button down from above',
                                                  fixture=True),
    'button-press-v3': MetaWorldTask('press the button on the front of the box', fixture=True),
    'button-press-wall-v3': MetaWorldTask('reach past the wall and press the button on the front of the box',
                                          fixture=True),
    'coffee-button-v3': MetaWorldTask('press the button on the coffee machine', fixture=True),
    'coffee-pull-v3': MetaWorldTask('pull the mug out from under the coffee machine', fixture=True),
    'coffee-push-v3': MetaWorldTask('push the mug under the coffee machine', fixture=True),
    'dial-turn-v3': MetaWorldTask('turn the dial', fixture=True),
    'disassemble-v3': MetaWorldTask('lift the nut off the peg', fixture=True, step_limit=350),
    'door-close-v3': MetaWorldTask('push the open door closed', fixture=True),
    'door-lock-v3': MetaWorldTask('turn the lock on the door down to lock it', fixture=True),
    'door-open-v3': MetaWorldTask('pull the door open by its handle', fixture=True),
    'door-unlock-v3': MetaWorldTask('turn the lock on the door to unlock it', fixture=True),
    'drawer-close-v3': MetaWorldTask('push the drawer closed', fixture=True),
    'drawer-open-v3': MetaWorldTask('pull the drawer open', fixture=True),
    'faucet-close-v3': MetaWorldTask('turn the faucet handle to close the faucet', fixture=True),
    'faucet-open-v3': MetaWorldTask('turn the faucet handle to open the faucet', fixture=True),
    'hammer-v3': MetaWorldTask('pick up the hammer and hammer the nail into the wall'),
    'hand-insert-v3': MetaWorldTask('put the block into the hole in the table'),
    'handle-press-side-v3': MetaWorldTask('press the handle down from the side', fixture=True),
    'handle-press-v3': MetaWorldTask('press the handle down', fixture=True),
    'handle-pull-side-v3': MetaWorldTask('pull the handle up from the side', fixture=True),
    'handle-pull-v3': MetaWorldTask('pull the handle up', fixture=True),
    'lever-pull-v3': MetaWorldTask('pull the lever up', fixture=True),
    'peg-insert-side-v3': MetaWorldTask('pick up the peg and insert it sideways into the hole', fixture=True,
                                        step_limit=200),
    'peg-unplug-side-v3': MetaWorldTask('pull the peg sideways out of the hole', fixture=True, step_limit=200),
    'pick-out-of-hole-v3': MetaWorldTask('pick the puck up out of the hole', step_limit=250),
    'pick-place-wall-v3': MetaWorldTask('pick up the puck, carry it over the wall and place it at the goal'),
    'plate-slide-back-side-v3': MetaWorldTask('slide the hockey puck sideways back out of the net'),
    'plate-slide-back-v3': MetaWorldTask('slide the hockey puck back out of the net'),
    'plate-slide-side-v3': MetaWorldTask('slide the hockey puck sideways into the net'),
    'plate-slide-v3': MetaWorldTask('slide the hockey puck into the net', fixture=True),
    'push-back-v3': MetaWorldTask('pull the puck back to the goal', step_limit=450),
    'push-wall-v3': MetaWorldTask('push the puck around the wall to the goal'),
    'reach-wall-v3': MetaWorldTask('reach over the wall to the goal'),
    'shelf-place-v3': MetaWorldTask('pick up the block and place it on the shelf', fixture=True),
    'soccer-v3': MetaWorldTask('push the soccer ball into the goal', fixture=True),
    'stick-pull-v3': MetaWorldTask('grasp the stick and pull the container to the goal with it', step_limit=300),
    'stick-push-v3': MetaWorldTask('grasp the stick and push the container to the goal with it'),
    'sweep-into-v3': MetaWorldTask('sweep the block into the hole'),
    'sweep-v3': MetaWorldTask('sweep the block off the edge of the table'),
    'window-close-v3': MetaWorldTask('slide the window closed', fixture=True),
    'window-open-v3': MetaWorldTask('slide the window open', fixture=True),
}
"""Meta-World env name -> task: the three core tasks first, then the other 47 alphabetically. The goal
site is drawn red, green or blue in the scenes of reach-v3, push-v3 and pick-place-v3."""

CORE_TASKS: tuple[str, ...] = tuple(t for t, spec in METAWORLD_TASKS.items() if spec.randomized)
"""reach-v3, push-v3, pick-place-v3: the tasks with the object-side disturbances (tuned on them, see
``envs.metaworld_config``), which the shipped Meta-World checkpoints were trained on."""


def closest_tasks(name: str) -> str:
    """The Meta-World task names closest to ``name`` as a message part, or all of them if none is close."""
    close = close_matches(str(name), METAWORLD_TASKS)
    if close:
        return f"closest Meta-World tasks: {', '.join(repr(t) for t in close)}"
    return f'none of the {len(METAWORLD_TASKS)} Meta-World tasks is close: {list(METAWORLD_TASKS)}'


def check_task(name: str) -> MetaWorldTask:
    """The task ``name``; raises UnknownTaskError naming it, with a "did you mean" and the closest names."""
    if name not in METAWORLD_TASKS:
        raise UnknownTaskError(f"unknown Meta-World task '{name}'{suggest(str(name), METAWORLD_TASKS)} "
                               f'({closest_tasks(name)})')
    return METAWORLD_TASKS[name]
