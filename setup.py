"""pip path for policytrim_ros (colcon builds the package from CMakeLists.txt instead).

Keep one console script per line in the exact form  'name = module:function',  : CMakeLists.txt
parses those lines to generate the lib/policytrim_ros/<name> wrappers that `ros2 run` expects.
"""
import os
from glob import glob
from xml.etree import ElementTree

from setuptools import find_packages, setup

PACKAGE = 'policytrim_ros'
VERSION = ElementTree.parse('package.xml').getroot().findtext('version')
# optional extras, pinned in requirements-<extra>.txt (one file each, read by scripts/setup.sh too)
EXTRAS = {extra: [line.strip() for line in open(f'requirements-{extra}.txt')
                  if line.strip() and not line.startswith('#')]
          for extra in ('ray', 'gpu')}

setup(
    name=PACKAGE,
    version=VERSION,
    description='Efficient chunked VLA policies on ROS 2 arms, post-trained with PolicyTrim.',
    license='Apache-2.0',
    python_requires='>=3.10',
    packages=find_packages(include=[PACKAGE, PACKAGE + '.*']),
    package_data={PACKAGE: ['robots/assets/*.xml']},
    data_files=[
        ('share/ament_index/resource_index/packages', ['resource/' + PACKAGE]),
        ('share/' + PACKAGE, ['package.xml']),
        ('share/' + PACKAGE + '/launch', glob('launch/*.launch.py')),
        ('share/' + PACKAGE + '/config', glob('config/*.yaml')),
        # the arm's robot description and Gazebo world (launch/robot.launch.py, launch/gazebo.launch.py)
        ('share/' + PACKAGE + '/urdf', glob('urdf/*.xacro')),
        ('share/' + PACKAGE + '/worlds', glob('worlds/*.sdf')),
        # shipped checkpoints, each with the command and metrics that made it
        *[('share/' + PACKAGE + '/' + model, sorted(f for f in glob(model + '/*') if os.path.isfile(f)))
          for model in sorted(glob('models/*'))],
    ],
    install_requires=['numpy', 'pyyaml', 'mujoco', 'tqdm'],
    extras_require=EXTRAS,
    entry_points={
        'console_scripts': [
            'sim_node = policytrim_ros.nodes.sim_node:main',
            'policy_node = policytrim_ros.nodes.policy_node:main',
            'episode_runner = policytrim_ros.nodes.episode_runner:main',
            'trainer_node = policytrim_ros.nodes.trainer_node:main',
            'recorder_node = policytrim_ros.nodes.recorder_node:main',
            'policytrim = policytrim_ros.cli:main',
        ],
    },
)
