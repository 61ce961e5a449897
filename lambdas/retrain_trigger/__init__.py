"""The retrain_trigger Lambda (lambda_handler in handler.py)."""
