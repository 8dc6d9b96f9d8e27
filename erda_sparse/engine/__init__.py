"""The training engine's pieces: the criterion (the loss of a step and its terms) and the diagnostics a run
logs. train.py puts them together; they import ops, models and data, never the trainer."""
