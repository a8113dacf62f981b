"""Getting a trained policy onto the robot: the arm-only action adapter, the in-process policy,
`vla serve` (LeRobot's async-inference server) and `vla lerobot` (LeRobot's CLIs with our loader)."""
