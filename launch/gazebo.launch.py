"""The arm in Gazebo (Harmonic on Jazzy, Ionic on Kilted) on its tabletop, then the policy.

    ros2 launch policytrim_ros gazebo.launch.py
    ros2 launch policytrim_ros gazebo.launch.py instruction:='reach the red target'
    ros2 launch policytrim_ros gazebo.launch.py headless:=true params_file:=/path/to/my_policy.yaml

Starts Gazebo with worlds/arm_table.sdf (ros_gz_sim's gz_sim.launch.py), robot_state_publisher
(urdf/policytrim_arm.urdf.xacro with gz_ros2_control/GazeboSimSystem, whose gz_ros2_control plugin
loads config/controllers.yaml), spawns the arm from /robot_description (ros_gz_sim create), bridges
/clock and the cameras' images (ros_gz_bridge), spawns joint_state_broadcaster and arm_controller,
then starts policy_node (launch/deploy.launch.py) with use_sim_time and config/gazebo.yaml, and
publishes ``instruction`` if given. Closing Gazebo ends the launch; so does policy_node exiting.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, IncludeLaunchDescription, OpaqueFunction
from launch.launch_description_sources import PythonLaunchDescriptionSource
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from policytrim_ros import launch_support

GAZEBO_PLUGIN = 'gz_ros2_control/GazeboSimSystem'
"""The <ros2_control> hardware plugin in Gazebo (the xacro adds the <gazebo> blocks for it)."""
CAMERAS = ('scene_camera', 'wrist_camera', 'workspace_camera')
"""The URDF's Gazebo camera sensors; each publishes /<name>/image, bridged to the same ROS topic."""


def generate_launch_description():
    share = get_package_share_directory('policytrim_ros')
    return LaunchDescription([
        *launch_support.bringup_arguments(share, os.path.join(share, 'config', 'gazebo.yaml')),
        DeclareLaunchArgument('world', default_value=os.path.join(share, 'worlds', 'arm_table.sdf'),
                              description='the Gazebo world (SDF)'),
        DeclareLaunchArgument('headless', default_value='false',
                              description='true: Gazebo server only, rendering the cameras offscreen (no GUI)'),
        DeclareLaunchArgument('gz_args', default_value='',
                              description="more arguments for `gz sim` (e.g. '-v 4')"),
        launch_support.failure_handler(),
        OpaqueFunction(function=_nodes),
    ])


def _nodes(context):
    share = get_package_share_directory('policytrim_ros')
    headless = LaunchConfiguration('headless').perform(context).strip().lower() in ('true', '1')
    gz_args = ' '.join(part for part in (
        '-r', '-s --headless-rendering' if headless else '', LaunchConfiguration('gz_args').perform(context).strip(),
        LaunchConfiguration('world').perform(context)) if part)
    gazebo = IncludeLaunchDescription(
        PythonLaunchDescriptionSource(os.path.join(get_package_share_directory('ros_gz_sim'), 'launch',
                                                   'gz_sim.launch.py')),
        launch_arguments={'gz_args': gz_args, 'on_exit_shutdown': 'true'}.items())
    state_publisher = Node(
        package='robot_state_publisher', executable='robot_state_publisher', output='screen',
        parameters=[{'robot_description': launch_support.robot_description(GAZEBO_PLUGIN),
                     'use_sim_time': True}])
    spawn = Node(package='ros_gz_sim', executable='create', name='spawn_arm', output='screen',
                 arguments=['-topic', 'robot_description', '-name', 'policytrim_arm'])
    bridge = Node(
        package='ros_gz_bridge', executable='parameter_bridge', name='gz_bridge', output='screen',
        arguments=['/clock@rosgraph_msgs/msg/Clock[gz.msgs.Clock',
                   *(f'/{camera}/image@sensor_msgs/msg/Image[gz.msgs.Image' for camera in CAMERAS)],
        parameters=[{'use_sim_time': True}])
    required = {'robot_state_publisher': state_publisher, 'ros_gz_bridge': bridge}
    return [gazebo, state_publisher, bridge, spawn, *launch_support.exit_rules(required),
            launch_support.after_success(spawn, 'ros_gz_sim create',
                                         launch_support.controllers_then_policy(context, share, 'true'))]
