"""`rig collect` on the simulated pick_place rig (a gripper driven by SpaceMouse buttons), and the
button -> width mapping."""

import json

import numpy as np
import pytest

from collection.collect import CollectConfig
from collection.episode_store import EpisodeStore
from collection.gripper_teleop import GripperTeleop, GripperTeleopConfig
from collection.teleop import TeleopConfig
from robot.config import ConfigError, config_path, load_config


@pytest.mark.timeout(300)
def test_pick_place_collect_records_width_obs_and_a_width_action_column(pick_place_demo):
    # `rig collect --config collect/sim_pick_place.yaml auto.episodes=1 record_video=false` (exit 0),
    # recorded once for the run (tests/shared_store.py), read here
    stdout, store = pick_place_demo["stdout"], pick_place_demo["store"]
    assert "gripper latency 40.0 ms (config)" in stdout
    summary = json.loads(stdout.strip().splitlines()[-1])
    assert summary["episodes_saved"] == 1  # saved on success: the box was picked and placed
    ep = EpisodeStore.open(store, "r").get_episode(0)
    assert ep["action"].shape[1] == 7 and ep["gripper_width"].shape[1] == 1
    widths, cmd = ep["gripper_width"][:, 0], ep["action"][:, 6]
    assert set(np.round(cmd, 4)) <= {0.0, 0.085} and (cmd == 0).any() and (cmd == 0.085).any()
    # The fingers closed on the 4 cm box (stopped on it, not at 0) and were open at the start.
    assert widths[0] == pytest.approx(0.085, abs=1e-3)
    assert np.any(np.abs(widths - 0.04) < 1e-3) and widths.min() > 0.035
    # The box was lifted: the TCP went up while the fingers held it.
    closed = np.abs(widths - 0.04) < 1e-3
    assert ep["robot_eef_pose"][closed, 2].max() > 0.08


def test_buttons_close_and_open_and_toggle():
    g = GripperTeleop(GripperTeleopConfig(), max_width_m=0.085)
    assert g.update([False, False]) == 0.085
    assert g.update([True, False]) == 0.0
    assert g.update([False, False]) == 0.0  # released: stays closed
    assert g.update([True, True]) == 0.085  # both: open wins
    t = GripperTeleop(GripperTeleopConfig(close_button=None, open_button=None, toggle_button=1), 0.085)
    assert [t.update(b) for b in ([0, 1], [0, 1], [0, 0], [0, 1], [0, 0])] == [0.0, 0.0, 0.0, 0.085, 0.085]


def test_gripper_button_with_another_role_is_a_config_error():
    with pytest.raises(ValueError, match="button 0 also has the role 'rotation_unlock'"):
        TeleopConfig(button_roles=["rotation_unlock", "none"])
    TeleopConfig(button_roles=["rotation_unlock", "none"], gripper=GripperTeleopConfig(close_button=None))
    with pytest.raises(ConfigError, match="rotation_unlock"):
        load_config(
            CollectConfig,
            config_path("collect/sim_pick_place.yaml"),
            ["teleop.button_roles=[rotation_unlock, none]"],
        )


def test_rigs_without_a_gripper_keep_six_dim_actions():
    from robot.env import Env

    cfg = load_config(CollectConfig, config_path("collect/sim_reach.yaml"))
    assert not cfg.rig.gripper.enabled
    assert Env(cfg.rig, spacemouse=False).action_dim == 6
    pp = load_config(CollectConfig, config_path("collect/sim_pick_place.yaml"))
    assert Env(pp.rig, spacemouse=False).action_dim == 7
