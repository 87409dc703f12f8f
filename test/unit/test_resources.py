"""package:// URIs name files installed with a ROS 2 package (the shipped checkpoint)."""
import pytest

from policytrim_ros import launcher, resources


def test_package_uri_resolves_under_the_share_directory():
    assert resources.resolve('package://policytrim_ros/config/sim.yaml') == \
        str(launcher.package_share() / 'config' / 'sim.yaml')
    assert resources.resolve('runs/bc/last') == 'runs/bc/last'


def test_bad_package_uris_say_what_is_wrong():
    with pytest.raises(ValueError, match='must have the form package://<package>/<path'):
        resources.resolve('package://policytrim_ros')
    with pytest.raises(FileNotFoundError, match="package 'no_such_pkg' is not installed"):
        resources.resolve('package://no_such_pkg/x')
