"""ROS 2 nodes: the only modules that import rclpy. Each converts messages, calls the core, publishes."""
