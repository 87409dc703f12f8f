"""One module per task of the embedded arm; ``policytrim_ros.envs.registry`` lists them."""
