"""Demonstrations and recordings: ``Episode``, rosbag2 (MCAP) bags, collection and training windows.

No ROS imports: bags are written and read with the ``rosbags`` library.
"""
from policytrim_ros.data.bag import (TOPIC_TYPES, BagError, bag_custom_data, read_episode_bag,
                                     typestore, write_episode_bag)
from policytrim_ros.data.episode import Episode

__all__ = ['TOPIC_TYPES', 'BagError', 'Episode', 'bag_custom_data', 'read_episode_bag', 'typestore',
           'write_episode_bag']
