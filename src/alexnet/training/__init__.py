"""Training: the configuration (typed, with the paper's defaults), the loop and its schedule,
checkpoints and run directories, evaluation, and running on many devices and surviving faults."""
