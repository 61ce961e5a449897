"""The loop around the rounds: retraining sets, the model registry and promotion, the demo and its report."""
