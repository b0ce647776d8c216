"""`rig deploy` watches the arm's latency online (robot/latency_watch.py): when the simulated arm's
delay changes mid-run it warns once, and the per-chunk JSON and the episode's attributes carry the
estimates."""

import json

import pytest

from collection.episode_store import EpisodeStore
from tests.calibration.helpers import calibrate_robot_latency

TICK_MS = 8.0


@pytest.mark.timeout(300)
def test_deploy_warns_when_the_arm_delay_changes_and_logs_the_estimates_per_chunk(tmp_path, rig_deploy):
    cal = tmp_path / "cal.yaml"
    # The rig as deployed below (40 ms arm delay), calibrated first as a user would.
    calibrate_robot_latency(cal, "rig/sim_reach.yaml", "arm.sim.action_delay_s=0.04")
    store = tmp_path / "eval.zarr"
    out = rig_deploy(
        f"rig.calibration_file={cal}",
        # 1 s after the arm controller started (before the policy moves it): 40 -> 90 ms.
        "rig.arm.sim.action_delay_change=[1.0, 0.09]",
        episodes=1,
        max_episode_s=6.0,
        latency_s=0.05,
        timeout_s=200,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    warnings = [ln for ln in out.stderr.splitlines() if "latency watch" in ln]
    assert len(warnings) == 1 and "action dead time is now" in warnings[0], out.stderr[-3000:]
    summary = json.loads(out.stdout.strip().splitlines()[-1])
    assert len(summary["latency_warnings"]) == 1
    doc = json.loads((tmp_path / "eval.zarr.deploy" / "episode_000000.json").read_text())
    watched = [c["latency_watch"]["action_dead_time_s"] for c in doc["chunks"]]
    late = [d for d in watched[len(watched) // 2 :] if d is not None]
    assert late and all(abs(d * 1e3 - 90.0) < TICK_MS for d in late), watched
    assert doc["latency_watch"]["action_dead_time"]["reference"] == "calibration"
    assert abs(doc["latency_watch"]["action_dead_time"]["reference_ms"] - 40.0) < TICK_MS
    attrs = EpisodeStore.open(store, "r").episode_attrs(0)["latency_watch"]
    assert attrs["action_dead_time"]["median_ms"] == doc["latency_watch"]["action_dead_time"]["median_ms"]
