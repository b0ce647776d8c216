"""training.torch_threads=auto (policy/threads.py): it times every core against one thread and keeps
the faster, saying so; a number or null is used as given."""

from __future__ import annotations

import time

import pytest
import torch

from policy import threads as threads_mod
from policy.threads import ThreadChooser


@pytest.fixture(autouse=True)
def _restore_threads():
    before = torch.get_num_threads()
    yield
    torch.set_num_threads(before)


def run_steps(chooser: ThreadChooser, n: int, step_s: dict[int, float]) -> None:
    for _ in range(n):
        chooser.before_step()
        time.sleep(step_s[torch.get_num_threads()])
        chooser.after_step()


@pytest.mark.parametrize("faster", [1, 2])
def test_auto_keeps_the_faster_thread_count_and_says_both_speeds(monkeypatch, faster):
    monkeypatch.setattr(threads_mod, "available_cores", lambda: 2)
    lines: list[str] = []
    chooser = ThreadChooser("auto", lines.append, warmup=2, probe=3)
    assert "auto" in lines[0] and chooser.chosen is None
    slow = {1: 0.03, 2: 0.03}
    slow[faster] = 0.005
    run_steps(chooser, 2 + 2 * 3, slow)
    assert chooser.chosen == faster and torch.get_num_threads() == faster
    assert len(lines) == 2 and lines[1].startswith(f"torch threads: {faster} (")
    assert "2 threads" in lines[1] and "1 thread " in lines[1]
    run_steps(chooser, 3, slow)  # decided: nothing changes any more
    assert torch.get_num_threads() == faster and len(lines) == 2


def test_a_number_is_used_as_given_and_torchrun_ranks_share_the_cores(monkeypatch):
    monkeypatch.setattr(threads_mod, "available_cores", lambda: 4)
    lines: list[str] = []
    assert ThreadChooser(3, lines.append).chosen == 3 and torch.get_num_threads() == 3
    assert ThreadChooser("auto", lines.append, world_size=2).chosen == 2
    assert "2 ranks" in lines[-1]
