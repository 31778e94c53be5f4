"""Training and evaluating cells: a suite's stages, one cell's lifecycle, the loop,
checkpoints, executors."""
