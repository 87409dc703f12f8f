"""What every node's ``main()`` shares: safe DDS defaults, the spin loop, and a clean shutdown."""
from __future__ import annotations

import os
import signal
import sys

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
        executor.add_node(node)
        while rclpy.ok() and not getattr(node, 'done', False):
            executor.spin_once(timeout_sec=0.1)
        code = getattr(node, 'exit_code', 0)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    except ValueError as err:  # invalid parameters / configs: one clear line, no traceback
        print(f'[{name}] error: {err}', file=sys.stderr)
        code = 2
    finally:
        if node is not None:
            if hasattr(node, 'shutdown'):
                try:
                    node.shutdown()
                except Exception as err:  # the context may already be gone after a signal
                    print(f'[{name}] shutdown: {err}', file=sys.stderr)
            node.destroy_node()
        rclpy.utilities.try_shutdown()
    return code
