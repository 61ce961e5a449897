"""The pre_labeling Lambda (lambda_handler in handler.py)."""
