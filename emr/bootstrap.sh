#!/bin/bash
# EMR bootstrap action: on every node, for the Python that Spark runs, the boto3 and botocore the test suite ran
# with. A floor (boto3>=1.35.69, setup.py's) would let a node keep whatever newer-or-equal boto3 it has and never
# match what was tested; botocore is pinned too because it holds the service models (CreateTable's WarmThroughput,
# S3's conditional writes). tests/test_emr.py fails when the venv's versions and these pins part.
set -euo pipefail
sudo python3 -m pip install --quiet "boto3==1.40.43" "botocore==1.40.76"
