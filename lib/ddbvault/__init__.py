"""ddbvault: disaster recovery for Amazon DynamoDB on Spark and Delta Lake."""

__version__ = "0.1.0"
