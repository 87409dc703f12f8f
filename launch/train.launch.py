"""PolicyTrim fine-tuning episodes through the nodes: policy_node + trainer_node (+ recorder_node),
on the embedded simulator (sim_node) or on a real arm.

    ros2 launch policytrim_ros train.launch.py config:=/path/to/policytrim.yaml
    ros2 launch policytrim_ros train.launch.py config:=my_run.yaml stage:=2 record:=false
    ros2 launch policytrim_ros train.launch.py kind:=horizon config:=/path/to/horizon.yaml   # the efficiency head
    ros2 launch policytrim_ros train.launch.py sim:=false params_file:=my_arm.yaml config:=my_run.yaml

``config`` is a ``policytrim train`` YAML (PolicyTrimConfig), or with kind:=horizon a ``policytrim
train-horizon`` one (HorizonTrainConfig); policy_node starts from its ``init``
checkpoint with ``trainer.enabled`` and trainer_node hot-reloads every update into it. With
sim:=true (default) sim_node resets each episode (its ``sim/reset_episode`` service) and judges it;
with sim:=false the arm, its controller and cameras come from the robot's own bring-up
(robot.launch.py or the driver's), and an operator resets the scene when the log says so
(``ros2 service call /trainer/reset_done std_srvs/srv/Trigger``) and gives the outcome of an episode
no detector judged (``ros2 service call /trainer/outcome std_srvs/srv/SetBool '{data: true}'``).
With record:=true (default) every episode is also a rosbag2 (MCAP) bag in ``record_dir`` (default
<out_dir>/bags). The launch ends when trainer_node is done (exit 1 if it failed) or a node dies.
"""
import os

from ament_index_python.packages import get_package_share_directory
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.conditions import IfCondition
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from policytrim_ros import launch_support


def generate_launch_description():
    share = get_package_share_directory('policytrim_ros')
    return LaunchDescription([
        DeclareLaunchArgument('config', default_value=os.path.join(share, 'config', 'training', 'policytrim.yaml'),
                              description='policytrim train YAML (PolicyTrimConfig): init checkpoint, tasks, '
                                          'iterations, groups, rewards, out_dir'),
        DeclareLaunchArgument('kind', default_value='policytrim',
                              description='policytrim (Stage 1 or 2 of the VLA) or horizon (the efficiency head '
                                          'on the frozen VLA)'),
        DeclareLaunchArgument('stage', default_value='1', description='PolicyTrim stage: 1 or 2'),
        DeclareLaunchArgument('sim', default_value='true',
                              description='true: the embedded simulator (sim_node) runs and resets the episodes; '
                                          'false: a real arm, reset by an operator'),
        DeclareLaunchArgument('params_file', default_value=os.path.join(share, 'config', 'sim.yaml'),
                              description='ROS parameter file of sim_node, policy_node and recorder_node '
                                          '(your arm\'s with sim:=false)'),
        DeclareLaunchArgument('record', default_value='true',
                              description='also start recorder_node: one MCAP bag per episode'),
        DeclareLaunchArgument('record_dir', default_value='',
                              description="where the bags go; '' = <out_dir>/bags of the training config"),
        OpaqueFunction(function=_nodes),
    ])


def _nodes(context):
    from policytrim_ros.config import from_dict, load_yaml
    config = LaunchConfiguration('config').perform(context)
    kind, stage = LaunchConfiguration('kind').perform(context), int(LaunchConfiguration('stage').perform(context))
    if kind == 'horizon':   # the trainer's own config class: its defaults, checked as trainer_node will
        from policytrim_ros.training.horizon_trainer import HorizonTrainConfig
        training = from_dict(HorizonTrainConfig, load_yaml(config))
    else:
        from policytrim_ros.training.trainer import PolicyTrimConfig
        training = from_dict(PolicyTrimConfig, {**load_yaml(config), 'stage': stage})
    out_dir = training.out_dir
    params_file = LaunchConfiguration('params_file').perform(context)
    sim = LaunchConfiguration('sim').perform(context).lower() in ('true', '1')
    record_dir = LaunchConfiguration('record_dir').perform(context).strip() or os.path.join(out_dir, 'bags')
    policy_overrides = {'trainer.enabled': True, 'policy.backend': 'torch', 'policy.device': 'cpu',
                        'policy.checkpoint': training.init,   # the weights the trainer starts from
                        'episode.log_path': os.path.join(out_dir, 'policy_episodes.jsonl')}
    nodes = {}
    if sim:
        nodes['sim_node'] = Node(package='policytrim_ros', executable='sim_node', name='sim_node', output='screen',
                                 parameters=[params_file])
    nodes['policy_node'] = Node(package='policytrim_ros', executable='policy_node', name='policy_node',
                                output='screen', parameters=[params_file, policy_overrides])
    trainer = Node(package='policytrim_ros', executable='trainer_node', name='trainer_node', output='screen',
                   parameters=[{'run.config': config, 'run.params': params_file, 'run.kind': kind, 'run.stage': stage,
                                'episodes.reset': 'service' if sim else 'operator'}])
    recorder = Node(package='policytrim_ros', executable='recorder_node', name='recorder_node', output='screen',
                    parameters=[params_file, {'recording.output_dir': record_dir}],
                    condition=IfCondition(LaunchConfiguration('record')))
    return [*nodes.values(), trainer, recorder,
            *launch_support.exit_rules(nodes, runner=trainer, runner_label='trainer_node')]
