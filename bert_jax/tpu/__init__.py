"""TPU planning from any host: ahead-of-time compilation for a slice (aot.py), time and memory
estimates (estimate.py), slice names and their chips (tpu_topology.py)."""
