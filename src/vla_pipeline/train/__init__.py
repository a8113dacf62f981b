"""Training: the typed config, the runtime (accelerate, device, precision), the inputs checked and
built, batch preparation, the optimizer step, guards, the validation loss, and the Trainer that runs
them (``trainer.train(cfg)``)."""
