"""Confirmations: the store (SQLite / DynamoDB), consolidation of reviewers' answers, export, and the retrain
trigger's logic. Exactly what the Lambda zips carry: standard library + boto3 only (ARCHITECTURE §2)."""
