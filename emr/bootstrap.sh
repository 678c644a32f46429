#!/bin/bash
# EMR bootstrap action: a boto3 recent enough for AWS_ENDPOINT_URL_* and the DynamoDB API ddbvault uses
# (OnDemandThroughput, WarmThroughput), on every node, for the Python that Spark runs.
set -euo pipefail
sudo python3 -m pip install --quiet "boto3>=1.35.69"
