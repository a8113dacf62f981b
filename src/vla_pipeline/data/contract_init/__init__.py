"""Starter contracts from a dataset (``vla contract init``), and the helpers that describe a
dataset's features by role (action/state candidates, cameras, other), which the validator also
uses to say what a dataset holds when a contract's keys are missing from it.

Everything a starter contract says is read from ``meta/info.json`` and the data parquet files;
what is a guess (units, semantics, the key mapping) is marked in the YAML for the user to confirm.
"""
