"""What the commands share: flag parsing, the run-picking flags, a trained run loaded for use."""
