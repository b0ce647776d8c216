"""The simulated world: table, tool, task objects; stepped by the simulated arm, seen by sim cameras."""
