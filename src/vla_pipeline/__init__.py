"""vla-pipeline: reproducible Pi0.5 fine-tuning on arm-only LeRobot datasets."""
