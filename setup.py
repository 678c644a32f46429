from setuptools import find_packages, setup

SPARK_PAIRS = {
    # pyspark and delta-spark move together; `make setup SPARK=4.0` picks the second pair.
    "3.5": ["pyspark==3.5.6", "delta-spark==3.3.2"],
    "4.0": ["pyspark==4.0.2", "delta-spark==4.0.0"],
}

setup(
    name="ddbvault",
    version="0.1.0",
    description="Disaster recovery for Amazon DynamoDB: a Delta Lake vault on S3, rebuilt into a replica table",
    package_dir={"": "lib"},
    packages=find_packages("lib"),
    python_requires=">=3.9",
    # boto3 1.35.69 (botocore 1.35.69, 2024-11-25): the first whose service models hold every request member we
    # send; an older botocore refuses them before any call (ParamValidationError). Newest first:
    #   S3 PutObject IfMatch (the writer lease's renewal and takeover)     botocore 1.35.69
    #   S3 DeleteObject IfMatch (the lease's release)                      botocore 1.35.67
    #   DynamoDB CreateTable WarmThroughput (table and GSIs)               botocore 1.35.60
    #   S3 PutObject IfNoneMatch (the lease's create-if-absent)            botocore 1.35.2
    #   DynamoDB CreateTable OnDemandThroughput (table and GSIs)           botocore 1.34.97
    #   AWS_ENDPOINT_URL_<SERVICE> honoured                                boto3 1.28.57
    # tests/test_foundation.py checks the installed models for these members.
    install_requires=["boto3>=1.35.69"],
    extras_require={
        "spark": SPARK_PAIRS["3.5"],
        "spark40": SPARK_PAIRS["4.0"],
        # deltalake: the tests prove that delta-rs reads the vault's tables, as users' readers do. cfn-lint: `make lint`
        # checks emr/ddbvault.json (and npm's asl-validator, emr/package.json, the state machines).
        "test": ["pytest>=8", "hypothesis>=6.100", "moto[server]==5.2.5", "ruff==0.17.6", "deltalake[pyarrow]==1.6.6",
                 "cfn-lint==1.58.0"],
        # matplotlib: bench/bench_budget.py draws each job's units per second against its budget (a PNG).
        "bench": ["dynamodump==1.11.1", "matplotlib>=3.7"],
    },
)
