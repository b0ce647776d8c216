"""``rig collect --config collect/sim_reach.yaml [key=value ...]``: record teleoperated demonstrations.

Keys: c start, s stop and save, Backspace discard last (confirm with y), q quit. Ends with one JSON
line summarizing what was recorded.
"""

from __future__ import annotations

import argparse
import json

from collection.collect import CollectConfig, run_collect
from collection.episode_store import saved_episodes_note
from robot.config import add_config_arguments, config_from_args
from robot.interrupt import Interrupted


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rig collect", description=__doc__)
    add_config_arguments(parser, default="collect/sim_reach.yaml")
    args = parser.parse_args(argv)
    config = config_from_args(CollectConfig, args)
    try:
        summary = run_collect(config)
    except KeyboardInterrupt as exc:
        raise Interrupted(saved_episodes_note(config.store)) from exc
    print(json.dumps(summary))
    return 0
