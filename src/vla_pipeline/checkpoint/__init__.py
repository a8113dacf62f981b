"""Checkpoints: the one run layout with every file name (``layout``), saving and strict loading
(``io``), the manifest, verification and checkpoint id (``manifest``), the processor steps a checkpoint
may have (``processor_steps``), pretrained weights (``pretrained``), resuming (``resume``), when to save
and what to keep (``checkpointer``) and where a run lives (``run_place``)."""


from __future__ import annotations


