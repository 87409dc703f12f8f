"""What every node's ``main()`` shares: safe DDS defaults, the spin loop, and a clean shutdown."""
from __future__ import annotations

import os
import signal
import sys
import time

import rclpy
from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
from rclpy.qos import QoSDurabilityPolicy, QoSProfile
from rclpy.signals import SignalHandlerOptions

# Commands and stats: reliable, keep the last 10.
RELIABLE = QoSProfile(depth=10)
# Episode events: late joiners get the latest one (a policy node started after the reset).
LATCHED = QoSProfile(depth=1, durability=QoSDurabilityPolicy.TRANSIENT_LOCAL)


def ros_environment_defaults() -> None:
    """Keep DDS discovery on this machine unless the user chose otherwise (set before rclpy.init).

    Without ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST Fast DDS multicasts discovery out of every NIC
    (ROS_LOCALHOST_ONLY is ignored from Kilted on).
    """
    os.environ.setdefault('ROS_AUTOMATIC_DISCOVERY_RANGE', 'LOCALHOST')
    os.environ.setdefault('MUJOCO_GL', 'egl')


def run_node(node_factory, name: str, args=None) -> int:
    """Init rclpy, build the node, spin until shutdown; return the process exit code.

    Uses a ``spin_once`` loop with a timeout: a plain ``spin`` was seen to miss SIGINT/SIGTERM.
    Every callback runs in this (the main) thread: MuJoCo's GL context belongs to the thread that
    made it, and rclpy's MultiThreadedExecutor stalled policy_node for up to 1 s after the
    observation it waited for had arrived (measured: 0.03-1.0 s per inference call through the
    nodes with it, under 0.02 s without; rclpy issues #1452, rclcpp #832).
    A node's ``companion_nodes`` (sim_node's controller) share the executor and the process.
    The node's ``shutdown()`` (if any) runs before it is destroyed, e.g. to command a hold. rclpy's
    own signal handlers are off so that the context is still valid for that last hold command:
    SIGINT and SIGTERM both arrive as KeyboardInterrupt.
    """
    ros_environment_defaults()
    rclpy.init(args=args, signal_handler_options=SignalHandlerOptions.NO)
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    node = None
    code = 0
    try:
        node = node_factory()
        executor = SingleThreadedExecutor()
        for each in (node, *getattr(node, 'companion_nodes', ())):
            executor.add_node(each)
        while rclpy.ok() and not getattr(node, 'done', False):
            executor.spin_once(timeout_sec=0.1)
        code = getattr(node, 'exit_code', 0)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except (ValueError, FileNotFoundError) as err:  # invalid parameters, configs, files: one line
        print(f'[{name}] error: {err}', file=sys.stderr)
        code = 2
    finally:
        if node is not None:
            if hasattr(node, 'shutdown'):
                try:
                    node.shutdown()
                except Exception as err:  # the context may already be gone after a signal
                    print(f'[{name}] shutdown: {err}', file=sys.stderr)
            for each in (*getattr(node, 'companion_nodes', ()), node):
                each.destroy_node()
        rclpy.utilities.try_shutdown()
    return code


class CauseLog:
    """Log each cause of trouble once, then at most every ``period_s`` with how often and since when.

    rclpy's ``throttle_duration_sec`` throttles per call site, so one cause could hide another;
    here every cause (a short key: 'stale joint_states', 'unsafe_chunk', ...) has its own clock.
    ``clear(cause)`` forgets it once the trouble is over, so a later recurrence is logged at once.
    """

    def __init__(self, logger, period_s: float = 5.0):
        self.logger, self.period_s = logger, period_s
        self._seen: dict[str, list[float]] = {}   # cause -> [first seen, last logged, count]

    def error(self, cause: str, text: str) -> None:
        text = self._due(cause, text)
        if text:
            self.logger.error(text)   # rclpy refuses two severities from one call site

    def info(self, cause: str, text: str) -> None:
        text = self._due(cause, text)
        if text:
            self.logger.info(text)

    def warning(self, cause: str, text: str) -> None:
        text = self._due(cause, text)
        if text:
            self.logger.warning(text)

    def _due(self, cause: str, text: str) -> str | None:
        """The line to log now for ``cause``, or None while it is throttled."""
        now = time.monotonic()
        seen = self._seen.get(cause)
        if seen is None:
            self._seen[cause] = [now, now, 1]
            return text
        seen[2] += 1
        if now - seen[1] < self.period_s:
            return None
        seen[1] = now
        since = time.strftime('%H:%M:%S', time.localtime(time.time() - (now - seen[0])))
        return f'{text} ({seen[2]} times in the last {now - seen[0]:.0f}s, since {since})'

    def clear(self, cause: str | None = None) -> None:
        if cause is None:
            self._seen.clear()
        else:
            self._seen.pop(cause, None)
