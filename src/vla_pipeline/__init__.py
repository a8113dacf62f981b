"""vla-pipeline: reproducible Pi0.5 fine-tuning on arm-only LeRobot datasets."""

__version__ = "0.1.0"
