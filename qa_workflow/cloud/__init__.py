"""The AWS side operators drive: deploying the CloudFormation stack and launching SageMaker jobs."""
