"""``rig collect --config collect/sim_reach.yaml [key=value ...]``: record teleoperated demonstrations.

Keys: c start, s stop and save, Backspace discard last (confirm with y), q quit. Ends with one JSON
line summarizing what was recorded.
"""

from __future__ import annotations

import argparse
import json

from collection.collect import CollectConfig, run_collect
from robot.config import add_config_arguments, config_from_args


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rig collect", description=__doc__)
    add_config_arguments(parser, default="collect/sim_reach.yaml")
    args = parser.parse_args(argv)
    config = config_from_args(CollectConfig, args)
    summary = run_collect(config)
    print(json.dumps(summary))
    return 0
