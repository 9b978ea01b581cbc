"""SAE training: configs, activation batches, the step loop, metrics, checkpoints."""
