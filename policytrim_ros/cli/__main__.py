"""``python -m policytrim_ros.cli``: the ``policytrim`` command."""
from policytrim_ros.cli import main

raise SystemExit(main())
