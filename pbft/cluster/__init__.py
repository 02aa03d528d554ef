"""Whole-cluster tools (layer 6, tests/test_layers.py): keygen, config check, the local
launcher, demo, bench, evidence export and verification, and the real-process scenario
runner (realscenario.py, whose results are pbft.sim.result's)."""
