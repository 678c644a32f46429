"""The one SparkSession builder every job and test uses.

Locally (a laptop, tests, CI) it puts the Delta and s3a jars that ``make jars`` fetched from Maven Central on
the classpath (no Ivy at run time), points s3a at the loopback endpoint from ``AWS_ENDPOINT_URL_S3`` /
``AWS_ENDPOINT_URL`` and maps ``s3://`` onto s3a, as EMR does. On an EMR cluster it adds no jars and no
filesystem settings: the cluster's own Delta (``delta-defaults`` classification) and S3 setup stay in charge.
In both cases it sets the two Delta session settings and forwards the AWS endpoint variables to executors.
"""
from __future__ import annotations

import glob
import logging
import os
import sys
from typing import Dict, List, Mapping, Optional
from urllib.parse import urlparse

from ddbvault.aws import endpoint_environment
from ddbvault.errors import DdbVaultError

log = logging.getLogger(__name__)

DELTA_SETTINGS = {
    "spark.sql.extensions": "io.delta.sql.DeltaSparkSessionExtension",
    "spark.sql.catalog.spark_catalog": "org.apache.spark.sql.delta.catalog.DeltaCatalog",
}
EMR_DELTA_LIB = "/usr/share/aws/delta/lib"
HADOOP_PREFIX = "spark.hadoop."
S3_SCHEMES = ("s3", "s3a", "s3n")  # s3:// and s3n:// go through s3a too (locally by our setting, on EMR 7.10+)
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def on_emr() -> bool:
    """True on an EMR node, where the cluster provides Delta and S3 access."""
    return os.path.isdir(EMR_DELTA_LIB) or os.environ.get("DDBVAULT_ON_CLUSTER") == "1"


def spark_pair() -> str:
    """``3.5`` or ``4.0``: the Spark line of the installed pyspark, which picks the jar folder."""
    import pyspark

    return ".".join(pyspark.__version__.split(".")[:2])


def local_jars() -> List[str]:
    """The jars ``make jars`` fetched for this pyspark (``DDBVAULT_JARS`` overrides the folder)."""
    folder = os.environ.get("DDBVAULT_JARS") or os.path.join(REPO_ROOT, ".jars", "spark-" + spark_pair())
    jars = sorted(glob.glob(os.path.join(folder, "*.jar")))
    if not any("delta-spark" in os.path.basename(j) for j in jars):
        raise DdbVaultError(
            f"no Delta jars in {folder} for pyspark {spark_pair()}: run `make jars` "
            f"(or set DDBVAULT_JARS to a folder holding delta-spark, delta-storage and hadoop-aws jars)"
        )
    return jars


def local_settings() -> Dict[str, str]:
    """Settings for a Spark outside EMR: jars, loopback S3, small shuffles."""
    conf = {
        "spark.jars": ",".join(local_jars()),
        "spark.sql.shuffle.partitions": "8",
        # Delta rebuilds a snapshot's state with 50 shuffle partitions by default: seconds of overhead per
        # commit on a laptop's small logs. Clusters keep the default.
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.ui.showConsoleProgress": "false",
        "spark.hadoop.fs.s3.impl": "org.apache.hadoop.fs.s3a.S3AFileSystem",
        "spark.hadoop.fs.s3a.path.style.access": "true",
        # s3a's multipart threads and connection pool sized for a laptop, not a fleet.
        "spark.hadoop.fs.s3a.threads.max": "16",
        "spark.hadoop.fs.s3a.connection.maximum": "32",
    }
    endpoint = os.environ.get("AWS_ENDPOINT_URL_S3") or os.environ.get("AWS_ENDPOINT_URL")
    if endpoint:
        conf["spark.hadoop.fs.s3a.endpoint"] = endpoint
        conf["spark.hadoop.fs.s3a.connection.ssl.enabled"] = str(endpoint.startswith("https")).lower()
        region = os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or "us-east-1"
        conf["spark.hadoop.fs.s3a.endpoint.region"] = region
        # A loopback S3 never needs the SDK's change detection against real ETags or bucket probes.
        conf["spark.hadoop.fs.s3a.bucket.probe"] = "0"
        conf["spark.hadoop.fs.s3a.change.detection.mode"] = "none"
    return conf


def vault_region_settings(vault: Optional[str], region: Optional[str]) -> Dict[str, str]:
    """The Spark setting that sends s3a's requests for the vault's bucket to ``region`` (``--vault-region``).

    A per-bucket setting, ``spark.hadoop.fs.s3a.bucket.<bucket>.endpoint.region``: the vault is in another region
    than the table, and other buckets the job may read keep theirs. Empty for a local vault or no region.

    >>> vault_region_settings("s3://vaults/orders", "us-west-2")
    {'spark.hadoop.fs.s3a.bucket.vaults.endpoint.region': 'us-west-2'}
    """
    if not vault or not region:
        return {}
    parsed = urlparse(vault)
    if parsed.scheme not in S3_SCHEMES or not parsed.netloc:
        return {}
    return {f"{HADOOP_PREFIX}fs.s3a.bucket.{parsed.netloc}.endpoint.region": region}


def set_vault_region(spark, vault: Optional[str], region: Optional[str]):
    """Put :func:`vault_region_settings` into the running session's Hadoop configuration; returns ``spark``.

    Set at run time, not only at session start: a session that already exists (a test run's, a ``--follow``
    loop's, a notebook's) ignores new ``spark.hadoop.*`` builder settings, while s3a reads its per-bucket settings
    from this configuration when it first opens the bucket, and Spark ships it to the executors with each job.
    """
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    for name, value in vault_region_settings(vault, region).items():
        conf.set(name[len(HADOOP_PREFIX):], value)
    return spark


def build_session(app_name: str, conf: Optional[Mapping[str, str]] = None):
    """Create (or return) the SparkSession for ``app_name``.

    ``conf`` wins over every default here. Outside spark-submit the master is ``DDBVAULT_SPARK_MASTER`` or
    ``local[*]``; under spark-submit the submitter's master is kept.
    """
    from pyspark.sql import SparkSession

    if not on_emr():
        # Python workers run the driver's interpreter (the venv), not whatever `python3` is on PATH; pyspark
        # reads this variable, not the spark.pyspark.python setting, when the driver is a plain Python process.
        os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    settings: Dict[str, str] = {"spark.sql.session.timeZone": "UTC"}
    settings.update(DELTA_SETTINGS)
    if not on_emr():
        settings.update(local_settings())
    for name, value in endpoint_environment().items():
        settings["spark.executorEnv." + name] = value
    settings.update(conf or {})

    builder = SparkSession.builder.appName(app_name)
    launched_by_submit = "PYSPARK_GATEWAY_PORT" in os.environ
    if not launched_by_submit and "spark.master" not in settings:
        builder = builder.master(os.environ.get("DDBVAULT_SPARK_MASTER", "local[*]"))
    for name, value in settings.items():
        builder = builder.config(name, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel(os.environ.get("DDBVAULT_SPARK_LOG_LEVEL", "WARN"))
    log.info("Spark %s session %s (on EMR: %s)", spark.version, app_name, on_emr())
    return spark
