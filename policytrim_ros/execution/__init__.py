"""Chunk execution: chunk -> timed trajectory, safety checks, per-episode bookkeeping and metrics."""
