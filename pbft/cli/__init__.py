"""The `pbft` command (layer 7, tests/test_layers.py): the parser and dispatch (main.py)
and the handlers (cluster.py, replica.py, scenario.py). Only pbft/__main__.py and the
console entry point import it."""
