"""Offline evaluation of a checkpoint on its held-out episodes: the protocol, inference with a fixed
noise seed, the metrics (pure functions), media (traces and videos of best/median/worst episodes),
and the reuse of an identical evaluation."""
