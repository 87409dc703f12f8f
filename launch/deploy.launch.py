"""policy_node alone, for a real arm or Gazebo (ros2_control with a joint_trajectory_controller).

    ros2 launch policytrim_ros deploy.launch.py
    ros2 launch policytrim_ros deploy.launch.py use_sim_time:=true params_file:=/path/to/my_arm.yaml
    ros2 launch policytrim_ros deploy.launch.py namespace:=arm1 joint_states:=/arm1/joint_states \
        controller:=/arm1/scaled_joint_trajectory_controller camera_topics:=/arm1/scene/image_raw

The launch ends when policy_node exits, with exit code 1 if it failed.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from policytrim_ros import launch_support


def generate_launch_description():
    default_params = os.path.join(get_package_share_directory('policytrim_ros'), 'config', 'deploy.yaml')
    return LaunchDescription([
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='ROS parameter file for policy_node'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='true under Gazebo (or any robot that publishes /clock)'),
        *launch_support.robot_arguments('policy_node'),
        OpaqueFunction(function=_nodes),
    ])


def _nodes(context):
    from policytrim_ros.nodes.policy_config import PolicyTopicsConfig
    namespace = launch_support.full_namespace(context)
    given = LaunchConfiguration('params_file').perform(context)
    policy = Node(package='policytrim_ros', executable='policy_node', name='policy_node', output='screen',
                  namespace=LaunchConfiguration('namespace'),
                  parameters=[launch_support.params_in_namespace(given, namespace), {'use_sim_time': ParameterValue(
                      LaunchConfiguration('use_sim_time'), value_type=bool),
                      **launch_support.controller_parameters(context)}],
                  remappings=launch_support.remappings(context, given, 'policy_node', PolicyTopicsConfig()))
    return [policy, *launch_support.exit_rules({'policy_node': policy})]
