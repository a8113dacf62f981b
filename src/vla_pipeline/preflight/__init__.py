"""Preflight: prove the machine, the numerics and the memory before the first GPU hour. Each check
reads the same params as the train stage and says pass, warn or fail, with the value it measured
and what to do; ``run.run_preflight`` runs them in order and writes the report."""
