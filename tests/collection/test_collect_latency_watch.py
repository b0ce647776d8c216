"""`rig collect` watches the arm's latency online (robot/latency_watch.py): an arm whose delay
changes mid-run gets one warning and the saved episodes say what it measured; an unchanged arm none."""

import subprocess
import sys

import pytest

from collection.episode_store import EpisodeStore
from robot.calibration_data import load_calibration
from tests.calibration.helpers import calibrate_robot_latency

RIG = [sys.executable, "-m", "robot.cli", "collect", "--config", "collect/sim_reach.yaml"]
TICK_MS = 8.0  # the sim arm's 125 Hz


@pytest.fixture(scope="module")
def calibration(tmp_path_factory):
    path = tmp_path_factory.mktemp("cal") / "sim_reach.yaml"
    calibrate_robot_latency(path, "rig/sim_reach.yaml")
    return path


def _collect(store, calibration, *extra):
    return subprocess.run(
        [
            *RIG,
            f"store={store}",
            "auto.episodes=2",
            "auto.episode_timeout_s=10",
            "record_video=false",
            f"rig.calibration_file={calibration}",
            *extra,
        ],
        capture_output=True,
        text=True,
        timeout=170,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.timeout(200)
def test_collect_warns_once_when_the_arm_delay_changes_mid_run(tmp_path, calibration):
    dead_time_ms = load_calibration(calibration).robot.action_latency.dead_time_s * 1e3
    store = tmp_path / "demos.zarr"
    # The sim arm's delay goes from the shipped 30 ms to 70 ms 2 s after its controller started.
    out = _collect(store, calibration, "rig.arm.sim.action_delay_change=[2.0, 0.07]")
    assert out.returncode == 0, out.stderr[-3000:]
    warnings = [ln for ln in out.stderr.splitlines() if "latency watch" in ln]
    assert len(warnings) == 1 and "action dead time is now" in warnings[0], out.stderr[-3000:]
    s = EpisodeStore.open(store, "r")
    last = s.episode_attrs(s.n_episodes - 1)["latency_watch"]["action_dead_time"]
    assert last["reference"] == "calibration" and last["reference_ms"] == pytest.approx(
        dead_time_ms, abs=1e-3
    )
    assert last["windows"] >= 1 and abs(last["median_ms"] - 70.0) < TICK_MS, last


@pytest.mark.timeout(200)
def test_collect_records_the_latencies_per_episode_and_stays_quiet_without_drift(tmp_path, calibration):
    store = tmp_path / "demos.zarr"
    out = _collect(store, calibration)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "latency watch" not in out.stderr, out.stderr[-3000:]
    s = EpisodeStore.open(store, "r")
    assert s.n_episodes == 2
    windows = 0
    for i in range(2):
        watch = s.episode_attrs(i)["latency_watch"]
        a = watch["action_dead_time"]
        windows += a["windows"]
        if a["windows"]:  # a short episode may hold no window in which the arm moved enough
            assert a["min_ms"] > 30.0 - TICK_MS and a["max_ms"] < 30.0 + TICK_MS, watch
        # The sim cameras stamp their frames (device time) and deliver them the configured latency
        # later (configs/rig/sim.yaml: 45 ms, 2 ms jitter).
        cams = watch["camera_transport"]
        assert abs(cams["scene"]["median_ms"] - 45.0) < 3.0 and abs(cams["wrist"]["median_ms"] - 45.0) < 3.0
        assert watch["warnings"] == []
    assert windows >= 1  # reach episodes are short: few windows where the arm moved enough
