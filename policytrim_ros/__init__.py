"""policytrim_ros: chunked VLA policies on ROS 2 arms, made efficient with PolicyTrim.

The hand-written modules and the rosidl-generated ``policytrim_ros.msg`` / ``policytrim_ros.srv``
share this package. ``extend_path`` lets the generated subpackages be found even when the source
tree shadows the installed package (e.g. ``python -m pytest`` from the repo root).

Rendering is headless: ``MUJOCO_GL`` defaults to 'egl' here, before any module of the package
imports mujoco (the envs, the scripted experts, ``robots.metaworld``); set it to 'osmesa' in the
environment to override.
"""
import os
from pkgutil import extend_path

os.environ.setdefault('MUJOCO_GL', 'egl')

__path__ = extend_path(__path__, __name__)
__version__ = '0.1.0'
