"""policy_node alone, for a real arm or Gazebo (ros2_control with a joint_trajectory_controller).

    ros2 launch policytrim_ros deploy.launch.py
    ros2 launch policytrim_ros deploy.launch.py use_sim_time:=true params_file:=/path/to/my_arm.yaml
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory('policytrim_ros'), 'config', 'deploy.yaml')
    return LaunchDescription([
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='ROS parameter file for policy_node'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='true under Gazebo'),
        Node(package='policytrim_ros', executable='policy_node', name='policy_node', output='screen',
             parameters=[LaunchConfiguration('params_file'), {'use_sim_time': ParameterValue(
                 LaunchConfiguration('use_sim_time'), value_type=bool)}]),
    ])
