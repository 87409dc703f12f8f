"""Embedded MuJoCo arm + policy node (+ optionally the episode runner).

    ros2 launch policytrim_ros sim.launch.py
    ros2 launch policytrim_ros sim.launch.py run_episodes:=true n_action_steps:=32
    ros2 launch policytrim_ros sim.launch.py checkpoint:=package://policytrim_ros/models/policytrim-wrist-h32-dagger n_action_steps:=8
    ros2 launch policytrim_ros sim.launch.py checkpoint:=package://policytrim_ros/models/policytrim-wrist chunk_size:=16 n_action_steps:=16
    ros2 launch policytrim_ros sim.launch.py checkpoint:=package://policytrim_ros/models/horizon-wrist-h32-dagger n_action_steps:=32 horizon:=learned
    ros2 launch policytrim_ros sim.launch.py namespace:=arm1 joint_states:=robot/joint_states controller:=my_controller
    ros2 launch policytrim_ros sim.launch.py run_episodes:=true record:=true record_dir:=/tmp/bags

With run_episodes:=true the launch ends when episode_runner is done, exiting 1 if it failed. If
sim_node or policy_node exits first, the launch shuts down (exiting 1 if that node failed).
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
    default_params = os.path.join(get_package_share_directory('policytrim_ros'), 'config', 'sim.yaml')
    return LaunchDescription([
        DeclareLaunchArgument('params_file', default_value=default_params,
                              description='ROS parameter file for all nodes'),
        DeclareLaunchArgument('n_action_steps', default_value='8',
                              description="h: actions executed per inference call (H/4 of the shipped "
                                          "baseline); overrides the params file's execution.n_action_steps"),
        DeclareLaunchArgument('chunk_size', default_value='32',
                              description="H: actions predicted per call, the checkpoint's own; overrides "
                                          "the params file's execution.chunk_size"),
        DeclareLaunchArgument('checkpoint', default_value='package://policytrim_ros/models/bc-wrist-h32-dagger',
                              description='policy checkpoint (directory or package:// URI) of the torch and '
                                          "onnx backends; overrides the params file's policy.checkpoint"),
        DeclareLaunchArgument('horizon', default_value='',
                              description="execution.horizon: fixed, learned (the checkpoint's efficiency head "
                                          "picks h per call, at most n_action_steps) or divergence; '' keeps the "
                                          "params file's"),
        DeclareLaunchArgument('run_episodes', default_value='false',
                              description='also start episode_runner to evaluate the configured tasks; the '
                                          'launch then exits when it is done (1 if it failed)'),
        DeclareLaunchArgument('record', default_value='false',
                              description='also start recorder_node: one rosbag2 (MCAP) bag per episode, '
                                          'with its ChunkStats and EpisodeStats (docs/recording.md)'),
        DeclareLaunchArgument('record_dir', default_value='',
                              description="where recorder_node writes the bags (<record_dir>/<episode id>/); "
                                          "'' keeps the params file's recording.output_dir"),
        *launch_support.robot_arguments('sim_node, policy_node and recorder_node'),
        OpaqueFunction(function=_nodes),
    ])


def _nodes(context):
    from policytrim_ros.nodes.sim_node import SimTopicsConfig
    from policytrim_ros.nodes.policy_config import PolicyTopicsConfig
    from policytrim_ros.nodes.recorder_node import RecorderTopicsConfig
    namespace = launch_support.full_namespace(context)
    given = LaunchConfiguration('params_file').perform(context)
    params_file = launch_support.params_in_namespace(given, namespace)
    controller = launch_support.controller_parameters(context)
    horizon = LaunchConfiguration('horizon').perform(context)
    execution = {'execution.horizon': horizon} if horizon else {}
    sim = Node(package='policytrim_ros', executable='sim_node', name='sim_node', output='screen',
               namespace=LaunchConfiguration('namespace'), parameters=[params_file, controller],
               remappings=launch_support.remappings(context, given, 'sim_node', SimTopicsConfig()))
    policy = Node(package='policytrim_ros', executable='policy_node', name='policy_node', output='screen',
                  namespace=LaunchConfiguration('namespace'),
                  parameters=[params_file, {'execution.n_action_steps': ParameterValue(
                      LaunchConfiguration('n_action_steps'), value_type=int),
                      'execution.chunk_size': ParameterValue(LaunchConfiguration('chunk_size'), value_type=int),
                      'policy.checkpoint': LaunchConfiguration('checkpoint'), **execution, **controller}],
                  remappings=launch_support.remappings(context, given, 'policy_node', PolicyTopicsConfig()))
    runner = Node(package='policytrim_ros', executable='episode_runner', name='episode_runner', output='screen',
                  namespace=LaunchConfiguration('namespace'), parameters=[params_file],
                  condition=IfCondition(LaunchConfiguration('run_episodes')))
    record_dir = LaunchConfiguration('record_dir').perform(context).strip()
    recorder = Node(package='policytrim_ros', executable='recorder_node', name='recorder_node', output='screen',
                    namespace=LaunchConfiguration('namespace'),
                    parameters=[params_file, {'recording.output_dir': record_dir} if record_dir else {},
                                {'topics.controller': name for name in controller.values()}],
                    remappings=launch_support.remappings(context, given, 'recorder_node', RecorderTopicsConfig()),
                    condition=IfCondition(LaunchConfiguration('record')))
    return [sim, policy, runner, recorder,
            *launch_support.exit_rules({'sim_node': sim, 'policy_node': policy}, runner=runner)]
