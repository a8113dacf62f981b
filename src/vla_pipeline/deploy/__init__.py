"""Getting a trained policy onto the robot: the arm-only action adapter (and, later, serving)."""
