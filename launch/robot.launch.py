"""The arm on ros2_control without Gazebo, then the policy: a real arm, or mock hardware.

    ros2 launch policytrim_ros robot.launch.py                     # mock_components/GenericSystem: no hardware
    ros2 launch policytrim_ros robot.launch.py hardware_plugin:=my_arm_driver/MyArmSystem params_file:=my_arm.yaml
    ros2 launch policytrim_ros robot.launch.py start_controller_manager:=false spawn_controllers:=false \\
        start_robot_state_publisher:=false params_file:=my_arm.yaml   # your driver's bring-up runs ros2_control

Starts robot_state_publisher (robot_description from urdf/policytrim_arm.urdf.xacro with
``hardware_plugin``), controller_manager's ros2_control_node with config/controllers.yaml, spawns
joint_state_broadcaster and arm_controller, then policy_node (launch/deploy.launch.py, which takes
its namespace/topic/controller arguments too) once they are active, and publishes ``instruction``
if given. The launch ends when policy_node, ros2_control_node or robot_state_publisher exits, or
when the spawner fails (exit code 1). ros2_control >= Jazzy (robot_description read from the topic;
the URDF's mimic joint).
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node
from launch_ros.parameter_descriptions import ParameterValue

from policytrim_ros import launch_support


def generate_launch_description():
    share = get_package_share_directory('policytrim_ros')
    return LaunchDescription([
        *launch_support.bringup_arguments(share, os.path.join(share, 'config', 'deploy.yaml'),
                                          'mock_components/GenericSystem'),
        DeclareLaunchArgument('use_sim_time', default_value='false',
                              description='true if your robot publishes /clock'),
        DeclareLaunchArgument('start_robot_state_publisher', default_value='true',
                              description="false if your robot's bring-up publishes /robot_description and /tf"),
        DeclareLaunchArgument('start_controller_manager', default_value='true',
                              description="run ros2_control_node with the description's hardware_plugin; false if "
                                          "your robot's driver runs its own controller_manager"),
        launch_support.failure_handler(),
        OpaqueFunction(function=_nodes),
    ])


def _nodes(context):
    share = get_package_share_directory('policytrim_ros')
    sim_time = ParameterValue(LaunchConfiguration('use_sim_time'), value_type=bool)
    state_publisher = Node(
        package='robot_state_publisher', executable='robot_state_publisher', output='screen',
        parameters=[{'robot_description': launch_support.robot_description(LaunchConfiguration('hardware_plugin')),
                     'use_sim_time': sim_time}],
        condition=IfCondition(LaunchConfiguration('start_robot_state_publisher')))
    controller_manager = Node(
        package='controller_manager', executable='ros2_control_node', output='screen',
        parameters=[LaunchConfiguration('controllers_file'), {'use_sim_time': sim_time}],
        remappings=[('~/robot_description', '/robot_description')],
        condition=IfCondition(LaunchConfiguration('start_controller_manager')))
    required = {'robot_state_publisher': state_publisher, 'ros2_control_node': controller_manager}
    return [state_publisher, controller_manager, *launch_support.exit_rules(required),
            *launch_support.controllers_then_policy(context, share, LaunchConfiguration('use_sim_time'))]
