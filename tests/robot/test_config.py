import subprocess
import sys

import pytest

from robot.config import ConfigError, StrictModel, load_config, parse_overrides


class _Limits(StrictModel):
    max_speed_m_s: float = 0.25
    workspace_min: list[float] = [-1.0, -1.0, 0.0]


class _Rig(StrictModel):
    name: str = "sim"
    rate_hz: float = 125.0
    limits: _Limits = _Limits()


def test_file_values_and_overrides_are_typed(tmp_path):
    f = tmp_path / "rig.yaml"
    f.write_text("name: lab\nlimits:\n  max_speed_m_s: 0.1\n")
    cfg = load_config(_Rig, f, ["rate_hz=500", "limits.workspace_min=[0, 0, 0.1]"])
    assert cfg.name == "lab" and cfg.rate_hz == 500.0
    assert cfg.limits.max_speed_m_s == 0.1 and cfg.limits.workspace_min == [0, 0, 0.1]


def test_unknown_key_in_file_names_key_and_file(tmp_path):
    f = tmp_path / "rig.yaml"
    f.write_text("limits:\n  max_sped_m_s: 0.1\n")
    with pytest.raises(ConfigError) as e:
        load_config(_Rig, f)
    assert "unknown key 'limits.max_sped_m_s'" in str(e.value) and str(f) in str(e.value)


def test_wrong_type_names_key_and_file(tmp_path):
    f = tmp_path / "rig.yaml"
    f.write_text("rate_hz: fast\n")
    with pytest.raises(ConfigError) as e:
        load_config(_Rig, f)
    msg = str(e.value)
    assert "key 'rate_hz'" in msg and str(f) in msg and "'fast'" in msg


def test_bad_override_is_blamed_on_the_override(tmp_path):
    f = tmp_path / "rig.yaml"
    f.write_text("name: lab\n")
    with pytest.raises(ConfigError, match=r"unknown key 'ratehz'.*overrides ratehz=3"):
        load_config(_Rig, f, ["ratehz=3"])
    with pytest.raises(ConfigError, match="key=value"):
        parse_overrides(["novalue"])


def test_includes_are_merged(tmp_path):
    (tmp_path / "base.yaml").write_text("name: base\nrate_hz: 125\n")
    (tmp_path / "top.yaml").write_text("defaults: [base.yaml]\nrate_hz: 500\n")
    cfg = load_config(_Rig, tmp_path / "top.yaml")
    assert (cfg.name, cfg.rate_hz) == ("base", 500.0)


def test_nested_includes_land_under_their_key(tmp_path):
    (tmp_path / "limits.yaml").write_text("max_speed_m_s: 0.05\n")
    (tmp_path / "rig.yaml").write_text("defaults: [{limits: limits.yaml}]\nname: nested\n")
    cfg = load_config(_Rig, tmp_path / "rig.yaml")
    assert cfg.limits.max_speed_m_s == 0.05 and cfg.name == "nested"


def test_rig_help_lists_subcommands():
    out = subprocess.run(
        [sys.executable, "-m", "robot.cli", "--help"], capture_output=True, text=True, timeout=30
    )
    assert out.returncode == 0
    for cmd in ("collect", "train", "deploy", "calibrate", "demo", "shm"):
        assert f"  {cmd} " in out.stdout
    bad = subprocess.run(
        [sys.executable, "-m", "robot.cli", "nope"], capture_output=True, text=True, timeout=30
    )
    assert bad.returncode == 2 and "unknown command 'nope'" in bad.stderr


def _rig(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "robot.cli", *args], capture_output=True, text=True, timeout=60
    )


def test_a_list_of_the_wrong_length_says_how_many_values_are_expected():
    out = _rig("arm", "status", "start_pose=[1,2]")
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "key 'start_pose'" in out.stderr and "expected 6 values, got 2" in out.stderr
    assert len(out.stderr) < 300  # one line, not one per missing position


def test_a_numeric_serial_on_the_command_line_is_the_text_typed():
    from robot.cameras.config import MultiCameraConfig
    from robot.config import config_path

    cfg = load_config(
        MultiCameraConfig, config_path("cameras/realsense_2cam.yaml"), ["cameras.scene.serial=012345678901"]
    )
    assert cfg.cameras["scene"].serial == "012345678901"  # not 12345678901, not a type error
    with pytest.raises(ConfigError, match="valid integer"):  # numbers stay numbers where they belong
        load_config(
            MultiCameraConfig, config_path("cameras/realsense_2cam.yaml"), ["cameras.scene.width=[1]"]
        )


def test_a_missing_config_file_is_named_once(tmp_path):
    missing = tmp_path / "nope.yaml"
    out = _rig("collect", "--config", str(missing))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.count(str(missing)) == 1, out.stderr
