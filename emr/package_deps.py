"""Writes pydeps.tar.gz for EMR Serverless: boto3, botocore and their pure-Python dependencies, at the versions
emr/bootstrap.sh pins for EMR on EC2 (stdlib only; run by `make package` with the interpreter that has them).

    python emr/package_deps.py dist/<version>/pydeps.tar.gz

The job run unpacks it beside the driver and every executor (`spark.archives=...#pydeps`) and puts it first on
PYTHONPATH: the image's own boto3 is older than ddbvault's floor (S3 conditional writes, CreateTable's
WarmThroughput). A zip on --py-files would not do: botocore reads its service models from files beside its code.
"""
from __future__ import annotations

import importlib.metadata
import importlib.util
import os
import re
import sys
import tarfile
from typing import List

HERE = os.path.dirname(os.path.abspath(__file__))
# Import names, with the distributions whose versions must equal the bootstrap's pins.
MODULES = ("boto3", "botocore", "s3transfer", "jmespath", "dateutil", "six", "urllib3")
PINNED = ("boto3", "botocore")


def pins() -> dict:
    with open(os.path.join(HERE, "bootstrap.sh"), encoding="utf-8") as handle:
        return dict(re.findall(r'"(boto3|botocore)==([^"]+)"', handle.read()))


def sources(module: str) -> List[str]:
    spec = importlib.util.find_spec(module)
    if spec is None or not spec.origin:
        raise SystemExit(f"package_deps: {module} is not installed for {sys.executable}: run `make setup` first")
    origin = spec.origin
    return [os.path.dirname(origin)] if os.path.basename(origin) == "__init__.py" else [origin]


def skip_compiled(info: tarfile.TarInfo):
    return None if "__pycache__" in info.name or info.name.endswith(".pyc") else info


def main(argv: List[str]) -> int:
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    wanted = pins()
    found = {name: importlib.metadata.version(name) for name in PINNED}
    if found != wanted:
        print(f"package_deps: {sys.executable} has {found}, emr/bootstrap.sh pins {wanted}: the archive must hold "
              f"what the tests ran with", file=sys.stderr)
        return 1
    with tarfile.open(argv[0], "w:gz") as archive:
        for module in MODULES:
            for path in sources(module):
                archive.add(path, arcname=os.path.basename(path), filter=skip_compiled)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
