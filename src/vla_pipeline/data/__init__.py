"""Datasets: the contract, the dataset's tables and LeRobot metadata, the one dataset factory of
train and evaluate (LeRobot's ``LeRobotDataset`` or the decoded-frame cache), augmentation, the
sampler, the demo dataset, and the tools that turn a foreign dataset into one (v2.1 conversion,
a starter contract)."""
