"""`policytrim eval --ros` and `policytrim demo` run their nodes in the user's ROS_DOMAIN_ID when
one is set; only when it is unset do they pick one (and say which)."""
import pytest

from policytrim_ros.cli import evaluate


class _Stop(Exception):
    pass


@pytest.fixture
def ros_run_env(monkeypatch):
    """The environment `policytrim eval --ros` hands its node processes (nothing is started)."""
    seen = {}

    def fake_run_ros_episodes(params, overrides, tasks, episodes, seed, out, env, *rest):
        seen['env'] = env
        raise _Stop

    monkeypatch.setattr(evaluate, 'run_ros_episodes', fake_run_ros_episodes)

    def run(tmp_path):
        with pytest.raises(_Stop):
            evaluate.run(cli_args(tmp_path))
        return seen['env']
    return run


def cli_args(tmp_path):
    import argparse
    parser = argparse.ArgumentParser()
    evaluate.add_parsers(parser.add_subparsers())
    return parser.parse_args(['eval', '--ros', '--tasks', 'reach', '--episodes', '1', '--n-action-steps', '4',
                              '--reference', '4', '--out', str(tmp_path)])


def test_eval_ros_keeps_the_users_ros_domain_id(tmp_path, monkeypatch, ros_run_env, capsys):
    monkeypatch.setenv('ROS_DOMAIN_ID', '171')   # outside the 1-100 a random pick uses
    env = ros_run_env(tmp_path)
    assert env['ROS_DOMAIN_ID'] == '171'
    assert 'ROS_DOMAIN_ID=171' in capsys.readouterr().out


@pytest.mark.parametrize('unset', ['', None])
def test_eval_ros_picks_a_domain_id_only_when_none_is_set_and_says_which(tmp_path, monkeypatch, ros_run_env,
                                                                          capsys, unset):
    if unset is None:
        monkeypatch.delenv('ROS_DOMAIN_ID', raising=False)
    else:
        monkeypatch.setenv('ROS_DOMAIN_ID', unset)
    env = ros_run_env(tmp_path)
    assert 1 <= int(env['ROS_DOMAIN_ID']) <= 100
    assert f'ROS_DOMAIN_ID={env["ROS_DOMAIN_ID"]} (picked at random' in capsys.readouterr().out
