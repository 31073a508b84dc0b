"""accel: AccelController, quantizers, sparse attention, speculative decoding. Filled by its own
issue.
"""
