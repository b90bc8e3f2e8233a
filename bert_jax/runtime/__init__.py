"""What every mode runs on: the train state, the mesh and shardings, the optimizer, the training
loop (loop.py), checkpoints and resume, preemption, the NaN guard, metrics and reports.

Imports only model/ and interop/ (for another checkpoint's params), never a mode.
"""
