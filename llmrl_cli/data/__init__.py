"""Replay buffer and (later) offline datasets."""
