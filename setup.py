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
    install_requires=["boto3>=1.28.57"],  # 1.28.57: first boto3 that honours AWS_ENDPOINT_URL_<SERVICE>
    extras_require={
        "spark": SPARK_PAIRS["3.5"],
        "spark40": SPARK_PAIRS["4.0"],
        # deltalake: the tests prove that delta-rs reads the vault's tables, as users' readers do.
        "test": ["pytest>=8", "hypothesis>=6.100", "moto[server]==5.2.5", "ruff==0.17.6", "deltalake[pyarrow]==1.6.6"],
        "bench": ["dynamodump==1.11.1"],
    },
)
