"""Reading what a run left behind: its trace (docs/formats.md, "The simulator's trace").

The writer lives with the simulator (`pbft.sim.trace`), because the simulator and the
replica process both write traces and neither may import this layer. This package holds
what reads them: the viewer page (`html`), the exports for other tools (`export`) and
the merging of real processes' traces into one (`merge`).
"""
