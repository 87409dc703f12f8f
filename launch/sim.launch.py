"""Embedded MuJoCo arm + policy node (+ optionally the episode runner).

    ros2 launch policytrim_ros sim.launch.py
    ros2 launch policytrim_ros sim.launch.py run_episodes:=true n_action_steps:=32
    ros2 launch policytrim_ros sim.launch.py checkpoint:=package://policytrim_ros/models/policytrim-wrist-h32-dagger n_action_steps:=8
    ros2 launch policytrim_ros sim.launch.py checkpoint:=package://policytrim_ros/models/policytrim-wrist chunk_size:=16 n_action_steps:=16
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description():
    params_file = LaunchConfiguration('params_file')
    default_params = os.path.join(get_package_share_directory('policytrim_ros'), 'config', 'sim.yaml')
    return LaunchDescription([
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='ROS parameter file for all nodes'),
        DeclareLaunchArgument('n_action_steps', default_value='8',
                              description='h: actions executed per inference call (H/4 of the shipped baseline)'),
        DeclareLaunchArgument('chunk_size', default_value='32',
                              description="H: actions predicted per call, the checkpoint's own"),
        DeclareLaunchArgument('checkpoint', default_value='package://policytrim_ros/models/bc-wrist-h32-dagger',
                              description='policy checkpoint (directory or package:// URI), torch backend'),
        DeclareLaunchArgument('run_episodes', default_value='false',
                              description='also start episode_runner to evaluate the configured tasks'),
        Node(package='policytrim_ros', executable='sim_node', name='sim_node', output='screen',
             parameters=[params_file]),
        Node(package='policytrim_ros', executable='policy_node', name='policy_node', output='screen',
             parameters=[params_file, {'execution.n_action_steps': ParameterValue(
                 LaunchConfiguration('n_action_steps'), value_type=int),
                 'execution.chunk_size': ParameterValue(LaunchConfiguration('chunk_size'), value_type=int),
                 'policy.checkpoint': LaunchConfiguration('checkpoint')}]),
        Node(package='policytrim_ros', executable='episode_runner', name='episode_runner', output='screen',
             parameters=[params_file], condition=IfCondition(LaunchConfiguration('run_episodes'))),
    ])
