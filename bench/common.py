"""Shared pieces of the benchmarks: a dynalite server, deterministic ~1 KB items, a fast threaded loader, the
environment every contender runs under, and the small helpers that time and print the figures.

dynalite (npm, MIT) is installed in ``bench/node_modules`` by ``make bench-node``. It is in-memory here and
started with zero CREATING/DELETING/UPDATING delays, so table set-up never pads a figure.
"""
from __future__ import annotations

import base64
import json
import os
import random
import shutil
import string
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import boto3
from botocore.config import Config

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(BENCH_DIR)
OUT_DIR = os.path.join(BENCH_DIR, ".out")
DYNALITE = os.path.join(BENCH_DIR, "node_modules", ".bin", "dynalite")
REGION = "us-east-1"
SEED = 20240501

sys.path.insert(0, os.path.join(REPO_ROOT, "lib"))
sys.path.insert(0, os.path.join(REPO_ROOT, "standins"))

from servers import aws_environment, free_port, running  # noqa: E402

# The issue asks for 100k-200k items; at dynalite's ~1-2k items/s a whole `make bench` takes ~13 minutes.
DEFAULT_ITEMS = 100_000

WORDS = ["alpha", "bravo", "charlie", "delta", "echo", "foxtrot", "golf", "hotel", "india", "juliet", "kilo",
         "lima", "mike", "november", "oscar", "papa", "québec", "東京", "straße", "zulu"]


# -- the server --------------------------------------------------------------------------------------------

@contextmanager
def dynalite(log_path: Optional[str] = None) -> Iterator[str]:
    """dynalite on a free loopback port (in memory, no table state delays); yields its URL; stops it after."""
    if not os.path.exists(DYNALITE):
        raise SystemExit(f"{DYNALITE} is missing: run `make bench-node` (npm install in bench/)")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    cmd = [DYNALITE, "--host", "127.0.0.1", "--port", str(port),
           "--createTableMs", "0", "--deleteTableMs", "0", "--updateTableMs", "0"]
    log_path = log_path or os.path.join(OUT_DIR, "dynalite.log")
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with running(cmd, url + "/", log_path):
        yield url


def use_endpoint(url: str) -> Dict[str, str]:
    """Point every AWS variable of this process (and so of Spark executors and subprocesses) at ``url``."""
    env = aws_environment(url, REGION)
    # dynamodump and boto3 read these; keep any profile out of the way.
    env["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull
    env["AWS_CONFIG_FILE"] = os.devnull
    os.environ.update(env)
    return env


def ddb():
    return boto3.client("dynamodb", region_name=REGION, config=Config(max_pool_connections=64,
                                                                        retries={"mode": "standard"}))


# -- the table and its items ---------------------------------------------------------------------------------

def create_table(name: str, range_key: bool = True) -> None:
    """A plain on-demand table: dynalite knows no Streams, WarmThroughput or OnDemandThroughput."""
    attrs = [{"AttributeName": "pk", "AttributeType": "S"}]
    keys = [{"AttributeName": "pk", "KeyType": "HASH"}]
    if range_key:
        attrs.append({"AttributeName": "sk", "AttributeType": "N"})
        keys.append({"AttributeName": "sk", "KeyType": "RANGE"})
    client = ddb()
    client.create_table(TableName=name, AttributeDefinitions=attrs, KeySchema=keys, BillingMode="PAY_PER_REQUEST")
    client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})


def make_item(rnd: random.Random, i: int, range_key: bool = True) -> Dict[str, Any]:
    """One realistic ~1 KB item in the low-level client form (binaries as bytes); item ``i`` has a unique key."""
    def words(n: int) -> str:
        return " ".join(rnd.choice(WORDS) for _ in range(n))

    def price() -> str:
        return f"{rnd.randint(0, 99999)}.{rnd.randint(0, 99):02d}"

    item: Dict[str, Any] = {
        # ~20 items share a hash key (a customer's events); the range key makes each unique.
        "pk": {"S": f"customer#{i // 20:09d}" if range_key else f"customer#{i:09d}"},
        "name": {"S": words(3)},
        "email": {"S": "".join(rnd.choices(string.ascii_lowercase, k=10)) + "@example.com"},
        "balance": {"N": price()},
        "visits": {"N": str(rnd.randint(0, 100000))},
        "ratio": {"N": f"0.{rnd.randint(0, 10**12):012d}"},
        "active": {"BOOL": rnd.random() < 0.5},
        "deleted_at": {"NULL": True},
        "bio": {"S": words(rnd.randint(55, 95))},
        "avatar": {"B": rnd.randbytes(48)},
        "tags": {"SS": sorted({rnd.choice(WORDS) for _ in range(6)})},
        "address": {"M": {
            "street": {"S": f"{rnd.randint(1, 999)} {words(2)} street"},
            "city": {"S": rnd.choice(WORDS).title()},
            "zip": {"S": f"{rnd.randint(0, 99999):05d}"},
            "geo": {"M": {"lat": {"N": f"{rnd.uniform(-90, 90):.6f}"}, "lon": {"N": f"{rnd.uniform(-180, 180):.6f}"}}},
        }},
        "orders": {"L": [
            {"M": {"id": {"S": f"o-{rnd.randint(0, 10**8)}"}, "total": {"N": price()},
                   "qty": {"N": str(rnd.randint(1, 9))}, "note": {"S": words(4)}}}
            for _ in range(rnd.randint(2, 5))
        ]},
    }
    if range_key:
        item["sk"] = {"N": str(1_700_000_000_000 + i)}
    return item


def items(n: int, range_key: bool = True, seed: int = SEED) -> Iterator[Dict[str, Any]]:
    rnd = random.Random(seed)
    for i in range(n):
        yield make_item(rnd, i, range_key)


def wire_json(value: Any) -> Any:
    """An item (or attribute value) of the low-level client's form as DynamoDB's wire JSON: binaries base64."""
    if isinstance(value, dict):
        return {k: wire_json(v) for k, v in value.items()}
    if isinstance(value, list):
        return [wire_json(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return base64.b64encode(value).decode("ascii")
    return value


def write_items_file(path: str, n: int, range_key: bool = True) -> str:
    """The benchmark's ``n`` items, one wire-JSON line each (the raw write loop's source, the stand-in's table)."""
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w", encoding="utf-8") as handle:
        for item in items(n, range_key):
            handle.write(json.dumps(wire_json(item), ensure_ascii=False, separators=(",", ":")))
            handle.write("\n")
    return path


def batch_write(client: Any, table: str, batch: List[Dict[str, Any]]) -> None:
    """One BatchWriteItem of <= 25 puts, re-sending UnprocessedItems until none are left."""
    request = {table: [{"PutRequest": {"Item": item}} for item in batch]}
    delay = 0.05
    while request:
        request = client.batch_write_item(RequestItems=request).get("UnprocessedItems") or {}
        if request:
            time.sleep(delay)
            delay = min(delay * 2, 2.0)


def write_threaded(table: str, source: Iterator[Dict[str, Any]], threads: int) -> int:
    """Put every item of ``source`` with ``threads`` threads of BatchWriteItem (one client each); the count.

    The same loop serves to load the benchmark table and as the restore's "raw" contender.
    """
    lock = threading.Lock()
    count = [0]
    errors: List[BaseException] = []

    def work() -> None:
        client = ddb()
        try:
            while True:
                with lock:
                    batch = [item for _, item in zip(range(25), source)]
                    count[0] += len(batch)
                if not batch:
                    return
                batch_write(client, table, batch)
        except BaseException as exc:
            errors.append(exc)

    run_threads(work, [()] * threads, errors)
    return count[0]


def run_threads(work: Callable[..., None], args_list: Sequence[tuple], errors: List[BaseException]) -> None:
    """One thread per args tuple; join them all, then raise the first error a thread recorded in ``errors``."""
    pool = [threading.Thread(target=work, args=args, daemon=True) for args in args_list]
    for thread in pool:
        thread.start()
    for thread in pool:
        thread.join()
    if errors:
        raise errors[0]


def load_table(table: str, n: int, range_key: bool = True, threads: int = 8) -> float:
    """Create ``table`` and fill it with ``n`` generated items; returns the seconds it took."""
    started = time.time()
    create_table(table, range_key)
    written = write_threaded(table, items(n, range_key), threads)
    if written != n:
        raise RuntimeError(f"loaded {written} items into {table}, expected {n}")
    return time.time() - started


def count_items(table: str) -> int:
    """Items in ``table``, by a Select=COUNT scan (dynalite's ItemCount is exact, but do not rely on it)."""
    client = ddb()
    total, kwargs = 0, {"TableName": table, "Select": "COUNT"}
    while True:
        page = client.scan(**kwargs)
        total += page["Count"]
        if not page.get("LastEvaluatedKey"):
            return total
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


# -- timing and reporting ------------------------------------------------------------------------------------

def load_average() -> float:
    return os.getloadavg()[0]


def timed(fn: Callable[[], Any]) -> tuple:
    """(seconds, result, 1-min load average before) of one call."""
    load = load_average()
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result, load


def build_spark(app: str, conf: Optional[Dict[str, str]] = None):
    """The project's own session builder, local[*], no UI; built before any figure is taken."""
    from ddbvault.session import build_session

    settings = {"spark.ui.enabled": "false", "spark.driver.memory": "3g"}
    settings.update(conf or {})
    return build_session(app, settings)


def cpu_row(benchmark: str, server: str, contender: str, n: int, wall_s: float, *,
            cpu_s: Optional[float], load: float, server_cpu_s: Optional[float] = None,
            **extra: Any) -> Dict[str, Any]:
    """One contender's figures: wall, items/s, CPU seconds of our processes, CPU s per 100k items and items/s
    per core (items over CPU seconds: what one fully busy core would sustain), and beside them the server's own
    CPU seconds over the same span (never ours: it shows how busy the server was, in cores)."""
    out: Dict[str, Any] = {
        "benchmark": benchmark, "server": server, "contender": contender, "items": n,
        "wall_s": round(wall_s, 2), "items_per_s": round(n / wall_s, 1) if wall_s else None,
        "cpu_s": None if cpu_s is None else round(cpu_s, 2),
        "cpu_s_per_100k": round(cpu_s * 100_000 / n, 2) if cpu_s and n else None,
        "items_per_core_s": round(n / cpu_s, 1) if cpu_s else None, "load1": round(load, 2),
        "server_cpu_s": None if server_cpu_s is None else round(server_cpu_s, 2),
        "server_cores_busy": round(server_cpu_s / wall_s, 2) if server_cpu_s is not None and wall_s else None}
    out.update(extra)
    return out


def _fmt(value: Any, digits: int = 1) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and digits == 0:
        return f"{value:,.0f}"
    if isinstance(value, float):
        return f"{value:,.{digits}f}"
    return f"{value:,}" if isinstance(value, int) else str(value)


def _server(r: Dict[str, Any]) -> str:
    if r.get("server_cpu_s") is None:
        return ""
    return f"{r['server_cpu_s']:.1f} ({r['server_cores_busy']:.2f})"


TABLE_HEAD = ("| benchmark | server | contender | items | wall s | items/s | CPU s | CPU s / 100k items "
              "| items/s per core | server CPU s (cores busy) | notes |\n|---|---|---|---|---|---|---|---|---|---|---|")


def markdown_table(rows: Sequence[Dict[str, Any]]) -> str:
    """Every row as one markdown table (the README's layout)."""
    lines = [TABLE_HEAD]
    for r in rows:
        lines.append(f"| {r['benchmark']} | {r['server']} | {r['contender']} | {_fmt(r['items'])} "
                     f"| {_fmt(r['wall_s'], 2)} | {_fmt(r['items_per_s'], 0)} | {_fmt(r['cpu_s'], 2)} "
                     f"| {_fmt(r['cpu_s_per_100k'], 2)} | {_fmt(r['items_per_core_s'], 0)} | {_server(r)} "
                     f"| {r.get('notes', '')} |")
    return "\n".join(lines)


def server_pids() -> List[int]:
    """This process's children that are servers (dynalite, the wire-speed stand-in): never counted as ours."""
    found = []
    for name in os.listdir("/proc"):
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat", encoding="ascii", errors="replace") as handle:
                ppid = int(handle.read().rsplit(")", 1)[1].split()[1])
            with open(f"/proc/{name}/cmdline", "rb") as handle:
                cmdline = handle.read()
        except (OSError, IndexError, ValueError):
            continue
        head = [os.path.basename(arg) for arg in cmdline.split(b"\0")[:2]]
        if ppid == os.getpid() and (b"dynalite" in head or b"wirespeed.py" in head):
            found.append(int(name))
    return found


_SERVER_CPU: Dict[str, Optional[float]] = {"last": None}


def servers_cpu() -> float:
    """CPU seconds the servers (and their own children) have used so far."""
    import cpu

    return sum(cpu.tree_cpu(pid) for pid in server_pids())


def last_server_cpu() -> Optional[float]:
    """The servers' CPU seconds over the last ``measured_*`` call."""
    return _SERVER_CPU["last"]


def measured_in_process(fn: Callable[[], Any]) -> tuple:
    """(wall s, CPU s of this process's tree without the servers, result, load) of one call."""
    import cpu

    load = load_average()
    servers = server_pids()
    if not servers:
        print("WARNING: no server process found among this process's children; nothing left out of the CPU figure")
    before = servers_cpu()
    clock = cpu.TreeClock(servers).start()
    result = fn()
    clock.stop()
    _SERVER_CPU["last"] = servers_cpu() - before
    return clock.wall_s, clock.cpu_s, result, load


def measured_process(cmd: List[str], log_name: str) -> tuple:
    """(wall s, CPU s of the whole process tree, stdout, load) of ``cmd`` run as a child (``cpu.measure``)."""
    import cpu

    load = load_average()
    before = servers_cpu()
    found = cpu.measure(cmd, os.path.join(OUT_DIR, log_name))
    _SERVER_CPU["last"] = servers_cpu() - before
    return found["wall_s"], found["cpu_s"], found["stdout"], load


def write_json(name: str, value: Any) -> str:
    os.makedirs(OUT_DIR, exist_ok=True)
    path = os.path.join(OUT_DIR, name)
    with open(path, "w", encoding="utf-8") as handle:
        json.dump(value, handle, indent=2, sort_keys=True, default=str)
        handle.write("\n")
    return path


def fresh_dir(path: str) -> str:
    shutil.rmtree(path, ignore_errors=True)
    os.makedirs(path)
    return path


# -- one prepared bench: server, loaded table, Spark ---------------------------------------------------------

class Bench:
    """A running dynalite with the source table loaded, a work directory, and (after ``spark()``) a session.

    Contenders' artefacts (the ddbvault vault, dynamodump's dump) are kept here so the restore benchmark can
    restore what the export benchmark made.
    """

    def __init__(self, url: str, table: str, n: int, range_key: bool, workdir: str) -> None:
        self.url, self.table, self.n, self.range_key, self.workdir = url, table, n, range_key, workdir
        self.port = int(url.rsplit(":", 1)[1])
        self.vault: Optional[str] = None
        self.dump_dir: Optional[str] = None
        self.load_s = 0.0
        self._spark = None

    def spark(self):
        """The session, built and warmed once: a 500-item export and restore on a side table, so the first
        Delta write's class loading and JIT (~20 s here) land in no figure. The job subprocess rows keep them."""
        if self._spark is None:
            started = time.perf_counter()
            self._spark = build_spark("ddbvault-bench")
            up = time.perf_counter() - started
            warm = time.perf_counter()
            self._warm_up()
            print(f"SparkSession up in {up:.1f}s, warmed in {time.perf_counter() - warm:.1f}s "
                  f"(defaultParallelism {self._spark.sparkContext.defaultParallelism}); in no figure below",
                  flush=True)
        return self._spark

    def _warm_up(self) -> None:
        from ddbvault.export import ExportOptions, export_table
        from ddbvault.restore import RestoreOptions, restore_table
        from ddbvault.runner import Run

        load_table("bench_warmup", 500, self.range_key)
        vault = fresh_dir(self.path("vault-warmup"))
        export_table(ExportOptions(table="bench_warmup", vault=vault, region=REGION, max_read_units=1e9),
                     Run(job="export_table"), self._spark)
        restore_table(RestoreOptions(vault=vault, table="bench_warmup_restored", region=REGION,
                                     max_write_units=1e9), Run(job="restore_table"), self._spark)

    def path(self, name: str) -> str:
        return os.path.join(self.workdir, name)

    def stop(self) -> None:
        if self._spark is not None:
            self._spark.stop()
            self._spark = None


@contextmanager
def prepared(n: int, range_key: bool = True, table: str = "bench_source") -> Iterator[Bench]:
    """dynalite up, ``table`` loaded with ``n`` items, ``AWS_*`` pointed at it; everything stopped after."""
    import tempfile

    workdir = tempfile.mkdtemp(prefix="ddbvault-bench-")
    try:
        with dynalite() as url:
            use_endpoint(url)
            bench = Bench(url, table, n, range_key, workdir)
            print(f"dynalite at {url}; loading {n:,} items into {table} ...", flush=True)
            bench.load_s = load_table(table, n, range_key)
            print(f"loaded in {bench.load_s:.1f}s ({n / bench.load_s:,.0f} items/s, 8 threads)", flush=True)
            try:
                yield bench
            finally:
                bench.stop()
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def tool(name: str) -> str:
    """A console script of this venv (dynamodump)."""
    return os.path.join(os.path.dirname(sys.executable), name)


def run_subprocess(cmd: List[str], log_name: str) -> tuple:
    """(seconds, stdout text) of ``cmd``; raises with the log's tail when it fails."""
    os.makedirs(OUT_DIR, exist_ok=True)
    log_path = os.path.join(OUT_DIR, log_name)
    started = time.perf_counter()
    with open(log_path, "wb") as log:
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=log, env=dict(os.environ), check=False)
    seconds = time.perf_counter() - started
    out = proc.stdout.decode("utf-8", "replace")
    if proc.returncode != 0:
        with open(log_path, encoding="utf-8", errors="replace") as handle:
            tail = handle.read()[-3000:]
        raise RuntimeError(f"{' '.join(cmd[:3])} ... exited {proc.returncode}\n{out[-2000:]}\n{tail}")
    return seconds, out


def last_json_line(text: str) -> Dict[str, Any]:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    return {}


def dump_item_count(dump_dir: str, table: str) -> int:
    data = os.path.join(dump_dir, table, "data")
    total = 0
    for name in os.listdir(data):
        with open(os.path.join(data, name), encoding="utf-8") as handle:
            total += len(json.load(handle)["Items"])
    return total

# dynamodump 1.11.1's backup starts MAX_NUMBER_BACKUP_WORKERS (25) threads THREAD_START_DELAY (1 s) apart.
DYNAMODUMP_START_SLEEP_S = 25.0


def bench_main(description: str, run: Callable[[Any, Any], Dict[str, Any]],
               add_arguments: Callable[[Any], None], out_name: str, argv=None) -> None:
    """The command line shared by bench_export.py and bench_restore.py."""
    import argparse
    import logging

    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--items", type=int, default=DEFAULT_ITEMS, help="items in the source table")
    parser.add_argument("--hash-only", action="store_true", help="a hash-key-only table (default: hash + range)")
    parser.add_argument("--verbose", action="store_true", help="ddbvault's INFO log lines (progress)")
    parser.add_argument("--skip-job", action="store_true", help="do not time the job as a subprocess")
    add_arguments(parser)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with prepared(args.items, range_key=not args.hash_only) as bench:
        result = run(bench, args)
    print(f"figures written to {write_json(out_name, result)}")
