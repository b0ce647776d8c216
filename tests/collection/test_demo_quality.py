"""collect's step-by-step checks (QualityTracker, its save line) and those of `rig episodes list`
and the plots (assess, from the stored arrays) are one definition: the same episode, the same flags."""

from __future__ import annotations

import numpy as np
import pytest

from collection.demo_quality import QualityTracker, assess


@pytest.mark.parametrize("case", ["healthy", "stall", "late", "both"])
def test_the_tracker_fed_step_by_step_flags_what_assess_flags_from_the_arrays(case):
    n = 40
    ts = 0.1 * np.arange(n)
    action = np.zeros((n, 6))
    action[:, 1] = 0.004 * np.arange(n)
    pose = action + 0.001
    if case in ("stall", "both"):
        pose[20:, 1] = pose[20, 1]  # 4 mm a step behind from step 20: steps 23.. are > 10 mm behind
    if case in ("late", "both"):
        ts[[5, 15, 30]] += 0.3  # three steps 0.3 s late: 5 of 39 gaps are over 1.5 dt_s (> 5 %)
        ts = np.sort(ts)
    tracker = QualityTracker(0.1)
    for k in range(n):
        tracker.add(ts[k], pose[k], action[k])
    live, stored = tracker.result(), assess({"timestamp": ts, "robot_eef_pose": pose, "action": action}, 0.1)
    want = {"healthy": [], "stall": ["stall"], "late": ["late"], "both": ["late", "stall"]}[case]
    assert live.flags == stored.flags == want
    assert live.to_attrs() == stored.to_attrs()
    assert list(live.behind_at) == list(stored.behind_at) and list(live.late_at) == list(stored.late_at)
