"""``rig collect --config collect/sim_reach.yaml [key=value ...]``: record teleoperated demonstrations.

store=PATH names the episode store (default: the config's ``store``, data/sim_reach.zarr in the
default collect/sim_reach.yaml): a new one is created, an existing one is appended to; on the sim rig
the world seeds continue from the store's last episode.

Keys (this terminal, or the preview window when there is a display): c start an episode, s stop and
save it, Backspace discard the episode being recorded (or, when idle, the last saved one: confirm
with y), q quit. Ctrl-C keeps every saved episode and drops the one being recorded; a discarded
episode leaves no video. A saved episode with many late steps or an arm behind its actions is
FLAGGED on its save line (collection/demo_quality.py).

Auto mode (auto.episodes=N, sim rig): N episodes without a person. Each starts from a reset world
and the home pose, is saved once the task succeeds, and is discarded after auto.episode_timeout_s
(auto.save_failed=true keeps it); the motion comes from the (scripted) SpaceMouse.

Ends with one JSON line summarizing what was recorded.
"""

from __future__ import annotations

import argparse
import json

from collection.collect import CollectConfig, run_collect
from collection.episode_store import saved_episodes_note
from robot.config import add_config_arguments, config_from_args
from robot.interrupt import Interrupted


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(
        prog="rig collect", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    add_config_arguments(parser, default="collect/sim_reach.yaml")
    args = parser.parse_args(argv)
    config = config_from_args(CollectConfig, args)
    try:
        summary = run_collect(config)
    except KeyboardInterrupt as exc:
        raise Interrupted(saved_episodes_note(config.store)) from exc
    print(json.dumps(summary))
    return 0
