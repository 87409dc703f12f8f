"""Files installed with a ROS 2 package, named the way URDF meshes are: ``package://<pkg>/<path>``.

Parameter files cannot use launch substitutions such as ``$(find-pkg-share ...)``, so a parameter
that names a shipped file (the default policy checkpoint) uses a package URI instead; it resolves
through the ament index on a colcon install and in the pip venv alike.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

SCHEME = 'package://'


def package_share(package: str) -> Path:
    """share/<package> of an installed ROS 2 package (FileNotFoundError names what is missing)."""
    from ament_index_python.packages import PackageNotFoundError, get_package_share_directory
    os.environ.setdefault('AMENT_PREFIX_PATH', sys.prefix)   # the pip venv is its own install prefix
    try:
        return Path(get_package_share_directory(package))
    except PackageNotFoundError:
        raise FileNotFoundError(f"package '{package}' is not installed in any AMENT_PREFIX_PATH entry "
                                f"({os.environ['AMENT_PREFIX_PATH']}); source its install/setup.bash "
                                'or run scripts/setup.sh') from None


def resolve(path: str) -> str:
    """``package://<pkg>/<relative path>`` -> the absolute path under share/<pkg>; other paths unchanged."""
    if not path.startswith(SCHEME):
        return path
    package, _, relative = path[len(SCHEME):].partition('/')
    if not package or not relative:
        raise ValueError(f"'{path}' must have the form {SCHEME}<package>/<path inside its share directory>")
    return str(package_share(package) / relative)
