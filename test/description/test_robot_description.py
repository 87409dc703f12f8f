"""The arm's URDF (urdf/policytrim_arm.urdf.xacro) and Gazebo world (worlds/arm_table.sdf), checked
with the real tools: xacro, check_urdf, Gazebo's own SDF parser (`ign sdf`), and MuJoCo against the
embedded arm's MJCF. Each check also runs on a deliberately broken copy and must reject it.
"""
from __future__ import annotations

import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

import mujoco
import numpy as np
import pytest
import yaml

from description_support import (CONTROLLERS, GAZEBO, MOCK, PLUGINS, REPO, WORLD, XACRO, require_tool,
                      run_xacro)
from policytrim_ros.robots.arm import SCENE_PATH

CAMERAS = ('scene_camera', 'workspace_camera', 'wrist_camera')
BODIES = ('base', 'link1', 'link2', 'link3', 'link4', 'link5', 'link6', 'hand', 'finger_left', 'finger_right')
"""Links of the URDF that are bodies of the same name in the MJCF."""
JOINTS = {'joint1': 'joint1', 'joint2': 'joint2', 'joint3': 'joint3', 'joint4': 'joint4', 'joint5': 'joint5',
          'joint6': 'joint6', 'gripper': 'finger_left', 'finger_right_joint': 'finger_right'}
"""URDF joint -> MJCF joint."""
OPTICAL = np.diag([1.0, -1.0, -1.0])
"""MJCF camera frame (x right, y up, looks along -z) -> optical frame (x right, y down, z forward)."""


def check_urdf(path: Path) -> subprocess.CompletedProcess:
    tool = require_tool('check_urdf', 'liburdfdom-tools')
    return subprocess.run([tool, str(path)], capture_output=True, text=True, timeout=60)


def ign_sdf(flag: str, path: Path) -> subprocess.CompletedProcess:
    tool = require_tool('ign', 'ignition-tools and libsdformat-dev')
    return subprocess.run([tool, 'sdf', flag, str(path)], capture_output=True, text=True, timeout=120)


def edited(source: Path, tmp_path: Path, old: str, new: str, count: int = 1) -> Path:
    """A copy of ``source`` in tmp_path with ``old`` replaced by ``new`` (which must be there)."""
    text = source.read_text()
    assert text.count(old) >= count, f'{old!r} is not in {source}'
    copy = tmp_path / source.name
    copy.write_text(text.replace(old, new, count))
    return copy


# ---- xacro ----------------------------------------------------------------------------------------

@pytest.mark.parametrize('plugin', PLUGINS)
def test_xacro_expands_for_every_hardware_plugin(urdf_files, plugin):
    robot = ET.parse(urdf_files[plugin]).getroot()
    systems = robot.findall('ros2_control')
    assert len(systems) == 1 and systems[0].findtext('hardware/plugin') == plugin
    gazebo_plugins = [p for g in robot.findall('gazebo') for p in g.findall('plugin')]
    sensors = [s.get('name') for g in robot.findall('gazebo') for s in g.findall('sensor')]
    if plugin == GAZEBO:
        assert [p.get('filename') for p in gazebo_plugins] == ['gz_ros2_control-system']
        assert Path(gazebo_plugins[0].findtext('parameters')).resolve() == CONTROLLERS.resolve()
        assert sorted(sensors) == sorted(CAMERAS)
    else:   # no Gazebo blocks where Gazebo does not run
        assert not gazebo_plugins and not sensors


def test_xacro_rejects_an_undefined_property(ament_env, tmp_path):
    broken = edited(XACRO, tmp_path, 'effort="150" velocity="1.5"', 'effort="${max_effort}" velocity="1.5"')
    # the copy still includes the checkout's macros through $(find policytrim_ros)
    done = run_xacro(ament_env, broken)
    assert done.returncode != 0
    assert "name 'max_effort' is not defined" in done.stderr, done.stderr


# ---- check_urdf -----------------------------------------------------------------------------------

@pytest.mark.parametrize('plugin', PLUGINS)
def test_check_urdf_parses_the_tree(urdf_files, plugin):
    done = check_urdf(urdf_files[plugin])
    assert done.returncode == 0, done.stdout + done.stderr
    assert 'root Link: world' in done.stdout
    for link in (*BODIES, 'tool0', *(f'{c}_optical_frame' for c in CAMERAS)):
        assert re.search(rf'child\(\d+\):\s+{link}$', done.stdout, re.M), (link, done.stdout)


def test_check_urdf_rejects_a_joint_whose_parent_link_does_not_exist(urdf_files, tmp_path):
    broken = edited(urdf_files[MOCK], tmp_path, '<parent link="link2"/>', '<parent link="link9"/>')
    done = check_urdf(broken)
    assert done.returncode != 0
    assert 'parent link [link9] of joint [joint3] not found' in done.stdout + done.stderr, done.stdout + done.stderr


# ---- Gazebo's SDF parser --------------------------------------------------------------------------

def test_ign_sdf_says_the_world_is_valid():
    done = ign_sdf('-k', WORLD)
    assert done.returncode == 0 and 'Valid.' in done.stdout, done.stdout + done.stderr


def test_ign_sdf_rejects_a_malformed_world(tmp_path):
    broken = edited(WORLD, tmp_path, '<box><size>0.045 0.045 0.045</size></box>', '<box><size>0.045 0.045</size></box>')
    done = ign_sdf('-k', broken)
    assert done.returncode != 0 and 'Valid.' not in done.stdout
    assert 'Unable to set value [0.045 0.045 ] for key[size]' in done.stderr, done.stderr


@pytest.fixture(scope='module')
def gazebo_sdf(urdf_files) -> ET.Element:
    """The SDF Gazebo makes of the Gazebo URDF (`ign sdf -p`), after `ign sdf -k` said it is valid."""
    done = ign_sdf('-k', urdf_files[GAZEBO])
    assert done.returncode == 0 and 'Valid.' in done.stdout, done.stdout + done.stderr
    printed = ign_sdf('-p', urdf_files[GAZEBO])
    assert printed.returncode == 0, printed.stderr
    return ET.fromstring(printed.stdout)


def sdf_cameras(model: ET.Element) -> dict[str, dict]:
    """{sensor name: {link, width, height, hfov, topic, frame}} of the camera sensors of an SDF."""
    return {s.get('name'): {'link': link.get('name'), 'width': int(s.findtext('camera/image/width')),
                            'height': int(s.findtext('camera/image/height')),
                            'hfov': float(s.findtext('camera/horizontal_fov')), 'topic': s.findtext('topic'),
                            'frame': s.findtext('gz_frame_id')}
            for link in model.iter('link') for s in link.findall('sensor') if s.get('type') == 'camera'}


def test_gazebo_keeps_the_cameras_and_the_control_plugin(gazebo_sdf):
    """What Gazebo spawns has the policy's cameras at the trained resolution and field of view, and
    the gz_ros2_control plugin with the shipped controllers file."""
    sim = yaml.safe_load((REPO / 'config' / 'sim.yaml').read_text())['sim_node']['ros__parameters']['env']
    mjcf = mujoco.MjModel.from_xml_path(str(SCENE_PATH))
    cameras = sdf_cameras(gazebo_sdf)
    assert sorted(cameras) == sorted(CAMERAS)
    for name, camera in cameras.items():
        assert (camera['width'], camera['height']) == (sim['image_width'], sim['image_height'])
        fovy = np.radians(mjcf.cam(name).fovy[0])
        assert camera['hfov'] == pytest.approx(2 * np.arctan(np.tan(fovy / 2) * camera['width'] / camera['height']),
                                               abs=1e-9)
        assert camera['topic'] == f'/{name}/image' and camera['frame'] == f'{name}_optical_frame'
    plugins = [p for p in gazebo_sdf.iter('plugin') if p.get('filename') == 'gz_ros2_control-system']
    assert len(plugins) == 1 and plugins[0].get('name') == 'gz_ros2_control::GazeboSimROS2ControlPlugin'
    assert Path(plugins[0].findtext('parameters')).read_text() == CONTROLLERS.read_text()


def test_gazebo_drops_a_camera_hung_on_the_world_link(ament_env, tmp_path):
    """Why the fixed cameras hang from `base`: Gazebo's URDF parser silently drops what hangs from
    `world`, so the check above would miss scene_camera."""
    broken = edited(XACRO, tmp_path, 'name="scene_camera" parent="base"', 'name="scene_camera" parent="world"')
    urdf = tmp_path / 'broken.urdf'
    done = run_xacro(ament_env, broken, hardware_plugin=GAZEBO)
    assert done.returncode == 0, done.stderr
    urdf.write_text(done.stdout)
    assert check_urdf(urdf).returncode == 0            # a valid URDF ...
    printed = ign_sdf('-p', urdf)
    assert printed.returncode == 0
    assert 'scene_camera' not in sdf_cameras(ET.fromstring(printed.stdout))   # ... whose camera Gazebo loses


def test_ign_sdf_rejects_a_urdf_with_a_joint_named_like_a_link(urdf_files, tmp_path):
    broken = edited(urdf_files[GAZEBO], tmp_path, '<joint name="finger_right_joint"', '<joint name="finger_right"')
    assert check_urdf(broken).returncode == 0          # urdfdom accepts it; Gazebo does not
    done = ign_sdf('-k', broken)
    assert done.returncode != 0 and 'Valid.' not in done.stdout
    assert 'Joint with name [finger_right] in model with name [policytrim_arm] has a name collision' in done.stderr


# ---- MuJoCo: the URDF's kinematics and inertials equal the MJCF arm's -----------------------------

def load_urdf_in_mujoco(path: Path) -> mujoco.MjModel:
    """MuJoCo's own URDF import, keeping fixed-joint links (tool0, cameras) as bodies."""
    robot = ET.parse(path).getroot()
    extension = ET.SubElement(robot, 'mujoco')
    ET.SubElement(extension, 'compiler', fusestatic='false', discardvisual='true')
    return mujoco.MjModel.from_xml_string(ET.tostring(robot, encoding='unicode'))


def frame_errors(urdf_path: Path, configurations: int = 1000, seed: int = 0) -> dict[str, tuple[float, float]]:
    """{frame: (max position error in m, max rotation-matrix error)} between the URDF (loaded by
    MuJoCo) and the MJCF arm over random joint configurations within the joint ranges."""
    urdf, mjcf = load_urdf_in_mujoco(urdf_path), mujoco.MjModel.from_xml_path(str(SCENE_PATH))
    ud, md = mujoco.MjData(urdf), mujoco.MjData(mjcf)
    rng = np.random.default_rng(seed)
    errors = {}

    def record(name, pos_a, rot_a, pos_b, rot_b):
        old = errors.get(name, (0.0, 0.0))
        errors[name] = (max(old[0], float(np.abs(pos_a - pos_b).max())),
                        max(old[1], float(np.abs(rot_a - rot_b).max())))

    for _ in range(configurations):
        for urdf_joint, mjcf_joint in JOINTS.items():
            low, high = mjcf.joint(mjcf_joint).range
            value = rng.uniform(low, high)
            ud.qpos[urdf.joint(urdf_joint).qposadr[0]] = value
            md.qpos[mjcf.joint(mjcf_joint).qposadr[0]] = value
        mujoco.mj_kinematics(urdf, ud)
        mujoco.mj_kinematics(mjcf, md)
        mujoco.mj_camlight(mjcf, md)   # camera poses
        for body in BODIES:
            record(body, ud.body(body).xpos, ud.body(body).xmat, md.body(body).xpos, md.body(body).xmat)
        record('tool0', ud.body('tool0').xpos, ud.body('tool0').xmat.reshape(3, 3),
               md.site('ee_site').xpos, md.site('ee_site').xmat.reshape(3, 3))
        for camera in CAMERAS:
            frame = ud.body(f'{camera}_optical_frame')
            record(camera, frame.xpos, frame.xmat.reshape(3, 3),
                   md.cam(camera).xpos, md.cam(camera).xmat.reshape(3, 3) @ OPTICAL)
    return errors


def test_urdf_forward_kinematics_equal_the_mjcf_arms(urdf_files):
    errors = frame_errors(urdf_files[MOCK])
    assert set(errors) == {*BODIES, 'tool0', *CAMERAS}
    worst = {name: e for name, e in errors.items() if e[0] > 1e-6 or e[1] > 1e-6}
    assert not worst, worst


def test_forward_kinematics_check_catches_a_1_mm_link_length_error(urdf_files, tmp_path):
    broken = edited(urdf_files[MOCK], tmp_path, '<origin rpy="0 0 0" xyz="0 0 0.32"/>',
                    '<origin rpy="0 0 0" xyz="0 0 0.321"/>')
    errors = frame_errors(broken, configurations=20)
    assert errors['link2'][0] < 1e-9 and errors['link3'][0] > 1e-4 and errors['wrist_camera'][0] > 1e-4


def inertial_errors(urdf_path: Path) -> dict[str, float]:
    """{link: max relative error of its mass, centre of mass and inertia tensor} against the MJCF
    bodies' as MuJoCo compiles them from their geoms."""
    mjcf = mujoco.MjModel.from_xml_path(str(SCENE_PATH))
    errors = {}
    for link in ET.parse(urdf_path).getroot().findall('link'):
        inertial = link.find('inertial')
        if link.get('name') not in BODIES:
            assert inertial is None, f"{link.get('name')} has an inertial the MJCF has no body for"
            continue
        body = mjcf.body(link.get('name'))
        rotation = np.zeros(9)
        mujoco.mju_quat2Mat(rotation, body.iquat)
        rotation = rotation.reshape(3, 3)
        expected = rotation @ np.diag(body.inertia) @ rotation.T
        i = {k: float(v) for k, v in inertial.find('inertia').attrib.items()}
        tensor = np.array([[i['ixx'], i['ixy'], i['ixz']], [i['ixy'], i['iyy'], i['iyz']],
                           [i['ixz'], i['iyz'], i['izz']]])
        assert inertial.find('origin').get('rpy', '0 0 0').split() == ['0', '0', '0']
        com = np.array([float(v) for v in inertial.find('origin').get('xyz').split()])
        errors[link.get('name')] = max(abs(float(inertial.find('mass').get('value')) / body.mass[0] - 1),
                                       float(np.abs(com - body.ipos).max()) / 0.01,
                                       float(np.abs(tensor - expected).max() / np.abs(expected).max()))
    return errors


def test_urdf_masses_and_inertias_equal_the_mjcf_arms(urdf_files):
    errors = inertial_errors(urdf_files[MOCK])
    assert set(errors) == set(BODIES)
    assert max(errors.values()) < 1e-6, errors


def test_inertial_check_catches_a_wrong_mass(urdf_files, tmp_path):
    broken = edited(urdf_files[MOCK], tmp_path, '<mass value="1.018713778"/>', '<mass value="1.1"/>')
    errors = inertial_errors(broken)
    assert errors['link3'] > 0.05 and errors['link2'] < 1e-6


def test_urdf_joint_limits_are_the_mjcf_ranges_and_the_policys_safety_limits(urdf_files):
    mjcf = mujoco.MjModel.from_xml_path(str(SCENE_PATH))
    joints = {j.get('name'): j for j in ET.parse(urdf_files[MOCK]).getroot().findall('joint')}
    for config in ('deploy.yaml', 'gazebo.yaml'):
        safety = yaml.safe_load((REPO / 'config' / config).read_text())['policy_node']['ros__parameters']['safety']
        for k, name in enumerate(['joint1', 'joint2', 'joint3', 'joint4', 'joint5', 'joint6', 'gripper']):
            limit = joints[name].find('limit')
            assert [float(limit.get('lower')), float(limit.get('upper'))] == list(mjcf.joint(JOINTS[name]).range)
            assert (safety['position_lower'][k], safety['position_upper'][k]) == (float(limit.get('lower')),
                                                                                 float(limit.get('upper'))), config
            assert safety['max_velocity'][k] == float(limit.get('velocity')), config
    mimic = joints['finger_right_joint'].find('mimic')
    assert mimic is not None and mimic.get('joint') == 'gripper'


# ---- the world ------------------------------------------------------------------------------------

def world_differences(world: Path) -> list[str]:
    """Where the SDF world's table, cube and goal differ from the MJCF scene's."""
    mjcf = mujoco.MjModel.from_xml_path(str(SCENE_PATH))
    models = {m.get('name'): m for m in ET.parse(world).getroot().iter('model')}
    found = []

    def compare(what, got, expected):
        if not np.allclose(np.asarray(got, float), np.asarray(expected, float), atol=1e-9):
            found.append(f'{what}: {got} != {expected}')

    def numbers(text):
        return [float(v) for v in text.split()]

    table = mjcf.geom('table')
    compare('table pose', numbers(models['table'].findtext('pose'))[:3], table.pos)
    compare('table size', numbers(models['table'].findtext('link/collision/geometry/box/size')), 2 * table.size)
    cube = mjcf.geom('cube')
    compare('cube pose', numbers(models['cube'].findtext('pose'))[:3], mjcf.body('cube').pos)
    compare('cube size', numbers(models['cube'].findtext('link/collision/geometry/box/size')), 2 * cube.size)
    compare('cube mass', [float(models['cube'].findtext('link/inertial/mass'))], mjcf.body('cube').mass)
    compare('cube inertia', [float(models['cube'].findtext(f'link/inertial/inertia/i{a}')) for a in ('xx', 'yy', 'zz')],
            mjcf.body('cube').inertia)
    compare('goal pose', numbers(models['goal'].findtext('pose'))[:3], mjcf.body('goal').pos)
    if models['goal'].find('link/collision') is not None:
        found.append('the goal marker must be visual only')
    goal = models['goal'].find('link')
    compare('goal sphere radius', [float(goal.findtext('visual[@name="goal_sphere"]/geometry/sphere/radius'))],
            mjcf.geom('goal_sphere').size[:1])
    compare('goal disc radius', [float(goal.findtext('visual[@name="goal_disc"]/geometry/cylinder/radius'))],
            mjcf.geom('goal_disc').size[:1])
    return found


def test_world_has_the_mjcf_scenes_table_cube_and_goal():
    assert world_differences(WORLD) == []


def test_world_check_catches_a_cube_of_the_wrong_size(tmp_path):
    broken = edited(WORLD, tmp_path, '<size>0.045 0.045 0.045</size>', '<size>0.05 0.05 0.05</size>', count=2)
    assert ign_sdf('-k', broken).returncode == 0     # valid SDF, wrong scene
    assert [d.split(':')[0] for d in world_differences(broken)] == ['cube size']
