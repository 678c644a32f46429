"""Loopback stand-ins for AWS, started and stopped by the tests (and the demo).

moto server serves DynamoDB, DynamoDB Streams and S3 for every region in one process; which region a request
is for comes from its signature, as with AWS. It runs through ``moto_patched.py`` (beside this file): moto 5.2.5
answers a segmented Scan of a table with a binary hash key with HTTP 500 (it utf-8-encodes the key's bytes), and
that launcher fixes the one method before starting moto's own server main.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import contextmanager
from typing import Iterator, List

REGION_A = "us-east-1"  # where the source table lives (and fails)
REGION_B = "us-west-2"  # the recovery region: vault bucket and replica table


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def wait_until_up(url: str, proc: subprocess.Popen, seconds: float = 30.0) -> None:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {proc.returncode} before it answered")
        try:
            urllib.request.urlopen(url, timeout=1).read()
            return
        except urllib.error.HTTPError:
            return  # it answered, if only to say no: it is up
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"server at {url} did not answer within {seconds:.0f}s")


@contextmanager
def running(cmd: List[str], url: str, log_path: str) -> Iterator[str]:
    """Run ``cmd`` (a server) until the block ends; ready once ``url`` answers any HTTP response."""
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_until_up(url, proc)
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def moto_server(log_path: str) -> Iterator[str]:
    """Start moto server on a free loopback port; yields its URL.

    Not the ``moto_server`` script but ``moto_patched.py``, which runs the same server main once it has fixed
    moto 5.2.5's segmented Scan of binary hash keys (see that module).
    """
    port = free_port()
    launcher = os.path.join(os.path.dirname(os.path.abspath(__file__)), "moto_patched.py")
    url = f"http://127.0.0.1:{port}"
    with running([sys.executable, launcher, "-H", "127.0.0.1", "-p", str(port)], url + "/moto-api/", log_path):
        yield url


def aws_environment(endpoint: str, region: str = REGION_A) -> dict:
    """The variables a job needs to talk to the stand-in: endpoints, a region, dummy credentials."""
    return {
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_REGION": region,
        "AWS_DEFAULT_REGION": region,
        "AWS_EC2_METADATA_DISABLED": "true",
    }
