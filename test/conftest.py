"""Test-wide environment: DDS stays on this machine, each test run gets its own ROS domain."""
import os
import random
import sys

# Must be set before anything initialises rclpy or spawns a node process.
os.environ['ROS_AUTOMATIC_DISCOVERY_RANGE'] = 'LOCALHOST'
os.environ.setdefault('ROS_DOMAIN_ID', str(random.Random(os.getpid()).randint(101, 200)))
os.environ.setdefault('AMENT_PREFIX_PATH', sys.prefix)
os.environ.setdefault('MUJOCO_GL', 'egl')
