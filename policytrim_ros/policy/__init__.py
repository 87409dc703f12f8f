"""Policy backends: ``Observation -> chunk (H, A)``; see ``base.ChunkPolicy``. The scripted experts
(``arm_expert``, ``metaworld_expert``) are backends too: they plan on the robots' scenes
(``policytrim_ros.robots``), never on the envs."""
