"""Evaluation: forced-horizon sweeps over executed lengths h, without ROS (fast, multi-process) or
through the ROS nodes, and their reports (JSON, markdown, PNG)."""
