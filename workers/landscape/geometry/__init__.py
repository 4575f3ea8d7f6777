"""The lowest layer: data sets, activation patterns and signed cones, units, and the network.

Nothing here imports from the other subpackages of ``workers.landscape``.
"""
