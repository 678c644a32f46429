"""DynamoDB access: pacing, retries, segmented scans, batch writes, table descriptions."""
