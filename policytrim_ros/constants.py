"""Names used everywhere (messages, JSONL logs, scalars, reports), defined once.

The metric names follow the design brief: success rate, steps S, executed length h
(``n_action_steps``), predicted length H (``chunk_size``), chunk utilization h/H, inference calls,
speedup Spd = calls_baseline / calls_method, and measured wall-clock seconds.
"""

SUCCESS = 'success'
SUCCESS_RATE = 'success_rate'
STEPS = 'steps'
N_ACTION_STEPS = 'n_action_steps'
CHUNK_SIZE = 'chunk_size'
CHUNK_UTILIZATION = 'chunk_utilization'
INFERENCE_CALLS = 'inference_calls'
SPEEDUP = 'speedup'
WALL_CLOCK_S = 'wall_clock_s'
END_REASON = 'end_reason'


def camera_topic(index: int) -> str:
    """The relative image topic of a robot's camera ``index`` (0-based, in tile order):
    'camera/image_raw', then 'camera2/image_raw', 'camera3/image_raw', ... The nodes default to
    these and episode bags use them with a leading '/'; remap to a real robot's topics."""
    if index < 0:
        raise ValueError(f'camera index ({index}) must be >= 0')
    return 'camera/image_raw' if index == 0 else f'camera{index + 1}/image_raw'


# Human-readable column headers for tables, keyed by metric name.
METRIC_LABELS = {
    SUCCESS: 'success',
    SUCCESS_RATE: 'SR',
    STEPS: 'steps S',
    N_ACTION_STEPS: 'h',
    CHUNK_SIZE: 'H',
    CHUNK_UTILIZATION: 'h/H',
    INFERENCE_CALLS: 'inference calls',
    SPEEDUP: 'Spd',
    WALL_CLOCK_S: 'wall-clock s',
}

# Why an episode ended (EpisodeStats.end_reason).
END_SUCCESS = 'success'
END_MAX_STEPS = 'max_steps'
END_FAILURE = 'failure'        # the environment ended it without success
END_PREEMPTED = 'preempted'    # a new episode started before this one ended
END_STOPPED = 'stopped'        # the node shut down mid-episode
END_ERROR = 'error'            # the policy produced an unusable chunk (or its input was unusable)
END_CONTROLLER_REJECTED = 'controller_rejected'  # the trajectory controller refused a window's goal
END_TOLERANCE_VIOLATED = 'tolerance_violated'    # the controller aborted a window: path/goal tolerance
END_CONTROLLER_ABORTED = 'controller_aborted'    # the controller aborted a window for another reason
END_JOINT_STATES_LOST = 'joint_states_lost'      # joint states stopped arriving mid-episode
END_INFERENCE_FAILED = 'inference_failed'        # the policy raised (a bug in a backend or plug-in)
END_INFERENCE_TIMEOUT = 'inference_timeout'      # an inference call took longer than its limit
END_SERVER_ERROR = 'server_error'                # the policy server answered with an error (text frame)
END_SERVER_LOST = 'server_lost'                  # the policy server could not be reached or closed
END_REASONS = (END_SUCCESS, END_MAX_STEPS, END_FAILURE, END_PREEMPTED, END_STOPPED, END_ERROR,
               END_CONTROLLER_REJECTED, END_TOLERANCE_VIOLATED, END_CONTROLLER_ABORTED, END_JOINT_STATES_LOST,
               END_INFERENCE_FAILED, END_INFERENCE_TIMEOUT, END_SERVER_ERROR, END_SERVER_LOST)
