"""Ctrl-C of ``rig episodes export --video``: the complete episodes stay, the partial one goes, and
the one ``interrupted:`` line says which (it said "nothing was written" beside complete mp4s)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest

from collection.episode_store import EpisodeStore
from tests.sigint import RIG, interrupt_command

pytestmark = pytest.mark.timeout(180)


def test_ctrl_c_of_a_video_export_keeps_the_complete_episodes_and_says_which(tmp_path: Path) -> None:
    store = tmp_path / "many.zarr"
    rng = np.random.default_rng(0)
    with EpisodeStore.open(store, "w", image_codec="raw", dt_s=0.1) as s:
        for i in range(30):
            s.add_episode(
                {
                    "camera_0": rng.integers(0, 256, size=(40, 96, 128, 3), dtype=np.uint8),
                    "timestamp": 10.0 * i + 0.1 * np.arange(40),
                }
            )
    videos = tmp_path / "videos"
    result = interrupt_command(
        [*RIG, "episodes", "export", str(store), "--video", str(videos)],
        tmp_path,
        ready="episode 1:",
        settle_s=0.0,
    )
    result.assert_clean_interrupt(kept="kept the ")
    line = next(x for x in result.err.splitlines() if "interrupted: " in x)
    m = re.search(r"kept the (\d+) complete episode\(s\) (0|0\.\.(\d+)) in ", line)
    assert m, line
    n = int(m.group(1))
    assert 2 <= n < 30, line
    left = sorted(p.name for p in videos.iterdir())
    assert left == [f"episode_{i:06d}" for i in range(n)], (left, line)  # the partial one is gone
    for i in range(n):
        assert (videos / f"episode_{i:06d}" / "camera_0.mp4").stat().st_size > 0
    assert result.out.count("videos in") == n
