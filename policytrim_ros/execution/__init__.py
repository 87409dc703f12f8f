"""Chunk execution: the executor (h of H, replans, windows as timed trajectories), safety checks,
metrics, the controller's acceptance rules (``jtc``) and the closed loop without ROS
(``episode.run_episode``, which drives an env with a policy: this layer sits above both)."""
