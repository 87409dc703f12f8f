"""Helpers for node tests over real DDS: an in-process test node, waits, node logs.

Nodes run as separate processes from the installed executables (as ``ros2 launch`` would start
them); the test talks to them from its own rclpy node spun in a background thread. Waits poll a
condition with a deadline (discovery takes 0.05-3 s); there are no fixed sleeps.
"""
from __future__ import annotations

import threading
import time

import pytest
import rclpy
from rclpy.executors import MultiThreadedExecutor
from rclpy.node import Node



def wait_for(predicate, timeout: float = 15.0, what: str = 'condition'):
    """Poll ``predicate`` until it returns something truthy; fail the test after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.01)
    pytest.fail(f'timed out after {timeout}s waiting for {what}')


class Harness:
    """An rclpy node for the test, spinning in the background, with message recorders."""

    def __init__(self):
        self.context = rclpy.Context()
        rclpy.init(context=self.context)
        self.node = Node('test_harness', context=self.context)
        self.executor = MultiThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self._thread = threading.Thread(target=self._spin, daemon=True)
        self._thread.start()
        self.received: dict[str, list] = {}

    def _spin(self):
        while self.context.ok():
            try:
                self.executor.spin_once(timeout_sec=0.05)
            except Exception:  # shutting down
                return

    def record(self, msg_type, topic: str, qos=10):
        """Subscribe and keep every message; returns the list that fills up."""
        messages = self.received.setdefault(topic, [])
        self.node.create_subscription(msg_type, topic, messages.append, qos)
        return messages

    def publisher(self, msg_type, topic: str, qos=10, matched_timeout: float = 15.0):
        """A publisher that is already matched with at least one subscriber."""
        pub = self.node.create_publisher(msg_type, topic, qos)
        wait_for(lambda: pub.get_subscription_count() > 0, matched_timeout, f'a subscriber on {topic}')
        return pub

    def stream(self, msg_type, topic: str, make_msg, rate_hz: float = 50.0, qos=10):
        """Publish ``make_msg(now_s)`` at ``rate_hz``, like a sensor; set ``.make_msg`` to change it."""
        return Stream(self, msg_type, topic, make_msg, rate_hz, qos)

    def fake_controller(self, name: str = 'arm_controller', **parameters):
        """A node named like a joint_trajectory_controller holding ``parameters`` (its parameter
        services answer policy_node's start-up query)."""
        node = Node(name, context=self.context)
        for key, value in parameters.items():
            node.declare_parameter(key, value)
        self.executor.add_node(node)
        return node

    def close(self):
        self.executor.shutdown()
        self.node.destroy_node()
        rclpy.shutdown(context=self.context)
        self._thread.join(timeout=2)


class Stream:
    """A periodic publisher (see Harness.stream); ``make_msg`` may return None to skip a tick."""

    def __init__(self, harness, msg_type, topic, make_msg, rate_hz, qos):
        self.make_msg = make_msg
        self.publisher = harness.publisher(msg_type, topic, qos)
        self.timer = harness.node.create_timer(1.0 / rate_hz, self._tick)

    def _tick(self):
        msg = self.make_msg(time.time())
        if msg is not None:
            self.publisher.publish(msg)

def node_log(tmp_path, executable: str) -> str:
    path = tmp_path / 'logs' / f'{executable}.log'
    return path.read_text() if path.exists() else ''
