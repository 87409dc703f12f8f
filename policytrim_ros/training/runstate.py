"""A run folder's resumable state, saved atomically as a whole, and its scalars.csv kept in step.

A save changes several folders together (last/ with its trainer state, raw/, checkpoints/<step>),
and a resumed run needs them all from one step. ``save_atomically`` writes each of them complete
under ``<out>/.saving/``, then marks the save complete (one small file, written and renamed: the
commit point), then moves each folder into place (the one it replaces goes to ``.replaced/``,
deleted last). So at every instant one complete state exists: before the mark, the previous
one, in place; after it, the new one, in place or still in ``.saving/``. ``recover``, called by a
run before it reads its folder, finishes a marked save and discards an unmarked one. A kill can
thus cost at most the steps since the last completed save, which the resumed run recomputes.

``open_scalars`` then drops the scalars.csv rows past the step the run resumes from (they are
written again) and a row cut short by a kill, and never writes a second header.
"""
from __future__ import annotations

import csv
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from policytrim_ros.policy.checkpoint import load_json, save_json

STAGING = '.saving'
REPLACED = '.replaced'
COMPLETE = 'COMPLETE.json'


def recover(out: Path) -> None:
    """Finish or discard a save that a kill interrupted in run folder ``out`` (no-op otherwise)."""
    staging = out / STAGING
    if (staging / COMPLETE).is_file():
        _move_into_place(out)
    elif staging.exists():
        shutil.rmtree(staging)   # unmarked: the previous state is still whole in place
    if (out / REPLACED).exists():
        shutil.rmtree(out / REPLACED)


def save_atomically(out: Path, writers: dict[str, Callable[[Path], None]]) -> None:
    """Save ``{folder relative to out: function writing that folder}`` as one atomic step."""
    recover(out)
    staging = out / STAGING
    for name, write in writers.items():
        (staging / name).parent.mkdir(parents=True, exist_ok=True)
        write(staging / name)
    save_json(staging / COMPLETE, {'folders': list(writers)})   # the commit point
    _move_into_place(out)


def _move_into_place(out: Path) -> None:
    staging = out / STAGING
    for name in load_json(staging / COMPLETE)['folders']:
        new, target = staging / name, out / name
        if not new.exists():
            continue                                   # moved before the kill
        if target.exists():
            replaced = out / REPLACED / name
            replaced.parent.mkdir(parents=True, exist_ok=True)
            if replaced.exists():
                shutil.rmtree(replaced)
            os.replace(target, replaced)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(new, target)
    if (out / REPLACED).exists():
        shutil.rmtree(out / REPLACED)
    shutil.rmtree(staging)


def open_scalars(path: Path, header: list[str], resumed_step: int) -> tuple[IO[str], Any]:
    """(file, csv writer) appending to scalars.csv at ``path`` after ``resumed_step``: its header once,
    then the rows an earlier run wrote for steps up to ``resumed_step`` (0 for a fresh run)."""
    kept: list[list[str]] = []
    if path.is_file():
        text = path.read_text()
        lines = text.splitlines(keepends=True)
        if lines and not lines[-1].endswith('\n'):
            lines.pop()                                # a row cut short by a kill
        kept = [row for row in csv.reader(lines)
                if len(row) == len(header) and row[0].isdigit() and int(row[0]) <= resumed_step]
    tmp = path.with_name(path.name + '.tmp')
    with tmp.open('w', newline='') as f:
        csv.writer(f).writerows([header, *kept])
    os.replace(tmp, path)
    log = path.open('a', newline='')
    return log, csv.writer(log)
