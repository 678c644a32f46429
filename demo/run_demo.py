"""`make demo`: the whole disaster-recovery cycle on one machine, with moto server standing in for AWS.

Region A (us-east-1) holds a live `orders` table; its vault is a Delta table in a bucket in region B
(us-west-2). The demo exports the table, keeps taking orders (merged into the vault from the table's stream), ships
a bad deploy that corrupts orders, takes region A away, rebuilds the table in region B from the vault alone as it
was the second before the bad deploy, and proves the replica equals the vault at that moment. Each step runs the
real job as an operator would.
"""
from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import tempfile
import time
from decimal import Decimal

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path[:0] = [os.path.join(ROOT, "standins"), os.path.join(ROOT, "lib")]

import boto3  # noqa: E402

from servers import REGION_A, REGION_B, aws_environment, moto_server  # noqa: E402

TABLE = "orders"
ITEMS = 3000
BUCKET = "ddbvault-demo-vaults"
SEGMENTS = "4"  # moto's segmented scan reads the whole table once per segment; on AWS leave the default


def make_item(rng: random.Random, i: int) -> dict:
    """A realistic order carrying every DynamoDB type, in the low-level client's form."""
    customer = f"customer-{i % 400:04d}"
    item = {
        "customer": {"S": customer},
        "order_id": {"N": str(100000 + i)},
        "status": {"S": rng.choice(["NEW", "PAID", "SHIPPED", "DELIVERED", "RETURNED"])},
        "placed_at": {"S": f"2015-09-{1 + i % 30:02d}T{i % 24:02d}:00:00Z"},
        "total": {"N": str(Decimal(rng.randint(100, 10_000_000)) / 100)},
        "exact": {"N": "12345678901234567890.123456789012345678"},  # 38 significant digits
        "tiny": {"N": "1E-130"},
        "gift": {"BOOL": rng.random() < 0.2},
        "coupon": {"NULL": True} if i % 3 else {"S": ""},  # an empty string is a value too
        "tags": {"SS": sorted(rng.sample(["fragile", "express", "bulk", "gift", "eu", "us"], 2))},
        "qty_by_sku": {"NS": [str(n) for n in sorted(rng.sample(range(1, 50), 3))]},
        "thumb": {"B": bytes(rng.getrandbits(8) for _ in range(16))},
        "lines": {"L": [{"M": {"sku": {"S": f"SKU-{rng.randint(1, 999):03d}"},
                               "price": {"N": str(rng.randint(1, 500))},
                               "sig": {"B": bytes([i % 256, 0, 255])}}} for _ in range(1 + i % 3)]},
        "address": {"M": {"city": {"S": rng.choice(["Zürich", "東京", "São Paulo", "Dublin"])},
                          "zip": {"S": f"{rng.randint(1000, 99999)}"}, "geo": {"L": [{"N": "47.37"}, {"N": "8.54"}]}}},
        "blobs": {"BS": [b"\x00", b"\x01\x02"]},
        "note": {"S": "Lieferung 📦 à domicile\u0301"},
        "expires_at": {"N": str(2_000_000_000 + i)},  # TTL, far in the future
    }
    if i % 5 == 0:
        item["gsi_region"] = {"S": rng.choice(["EU", "US", "APAC"])}
    return item


def create_source(env_endpoint: str) -> None:
    ddb = boto3.client("dynamodb", region_name=REGION_A)
    ddb.create_table(
        TableName=TABLE,
        AttributeDefinitions=[{"AttributeName": n, "AttributeType": t} for n, t in
                              (("customer", "S"), ("order_id", "N"), ("status", "S"), ("gsi_region", "S"))],
        KeySchema=[{"AttributeName": "customer", "KeyType": "HASH"},
                   {"AttributeName": "order_id", "KeyType": "RANGE"}],
        BillingMode="PAY_PER_REQUEST",
        GlobalSecondaryIndexes=[{"IndexName": "by_region",
                                 "KeySchema": [{"AttributeName": "gsi_region", "KeyType": "HASH"}],
                                 "Projection": {"ProjectionType": "ALL"}}],
        LocalSecondaryIndexes=[{"IndexName": "by_status",
                                "KeySchema": [{"AttributeName": "customer", "KeyType": "HASH"},
                                              {"AttributeName": "status", "KeyType": "RANGE"}],
                                "Projection": {"ProjectionType": "KEYS_ONLY"}}],
        StreamSpecification={"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        Tags=[{"Key": "team", "Value": "checkout"}, {"Key": "tier", "Value": "critical"}],
    )
    ddb.update_time_to_live(TableName=TABLE,
                            TimeToLiveSpecification={"Enabled": True, "AttributeName": "expires_at"})
    ddb.update_continuous_backups(TableName=TABLE,
                                  PointInTimeRecoverySpecification={"PointInTimeRecoveryEnabled": True})
    rng = random.Random(20150920)
    batch = []
    for i in range(ITEMS):
        batch.append({"PutRequest": {"Item": make_item(rng, i)}})
        if len(batch) == 25 or i == ITEMS - 1:
            pending = {TABLE: batch}
            while pending:
                pending = ddb.batch_write_item(RequestItems=pending).get("UnprocessedItems") or None
            batch = []
    boto3.client("s3", region_name=REGION_B).create_bucket(
        Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION_B})


def business_as_usual(rng: random.Random) -> str:
    """Orders keep coming after the export: new ones, status changes, cancellations. Returns a description."""
    ddb = boto3.client("dynamodb", region_name=REGION_A)
    for i in range(ITEMS, ITEMS + 150):
        ddb.put_item(TableName=TABLE, Item=make_item(rng, i))
    for i in range(0, 300, 3):
        ddb.update_item(TableName=TABLE, Key={"customer": {"S": f"customer-{i % 400:04d}"},
                                              "order_id": {"N": str(100000 + i)}},
                        UpdateExpression="SET #s = :s, #l[0].price = :p",
                        ExpressionAttributeNames={"#s": "status", "#l": "lines"},
                        ExpressionAttributeValues={":s": {"S": "SHIPPED"}, ":p": {"N": "19.99"}})
    for i in range(1, 300, 7):
        ddb.delete_item(TableName=TABLE, Key={"customer": {"S": f"customer-{i % 400:04d}"},
                                              "order_id": {"N": str(100000 + i)}})
    return "150 new orders, 100 shipped (status and a nested price changed), 43 cancelled (deleted)"


def bad_deploy() -> str:
    """A release that zeroes the totals of 500 orders and deletes 100 more."""
    ddb = boto3.client("dynamodb", region_name=REGION_A)
    for i in range(1000, 1500):
        ddb.update_item(TableName=TABLE, Key={"customer": {"S": f"customer-{i % 400:04d}"},
                                              "order_id": {"N": str(100000 + i)}},
                        UpdateExpression="SET #t = :z", ExpressionAttributeNames={"#t": "total"},
                        ExpressionAttributeValues={":z": {"N": "0"}})
    for i in range(2000, 2100):
        ddb.delete_item(TableName=TABLE, Key={"customer": {"S": f"customer-{i % 400:04d}"},
                                              "order_id": {"N": str(100000 + i)}})
    return "500 order totals set to 0, 100 orders deleted"


def table_texts(region: str) -> list:
    """Every item of the table as the vault's canonical text (the demo's own check, beside verify_replica)."""
    from ddbvault import codec

    ddb = boto3.client("dynamodb", region_name=region)
    found, kwargs = [], {"TableName": TABLE}
    while True:
        page = ddb.scan(**kwargs)
        found.extend(codec.encode_item(item) for item in page["Items"])
        if "LastEvaluatedKey" not in page:
            return sorted(found)
        kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]


def next_second() -> None:
    time.sleep(1.2 - (time.time() % 1.0))


def run_job(title: str, args: list) -> dict:
    print(f"\n== {title}\n$ python jobs/{' '.join(args)}", flush=True)
    started = time.time()
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "jobs", args[0]), *args[1:]],
                          capture_output=True, text=True, check=False)
    progress = [line.split(": ", 1)[-1] for line in proc.stderr.splitlines() if " INFO ddbvault." in line]
    for line in progress[-4:]:
        print("   " + line)
    summary = json.loads(proc.stdout.strip().splitlines()[-1])
    if proc.returncode != 0:
        print(proc.stderr.strip().splitlines()[-1], file=sys.stderr)
        raise SystemExit(f"demo: {args[0]} failed (exit {proc.returncode}); see the line above")
    summary["wall_s"] = round(time.time() - started, 1)
    return summary


def main() -> int:
    workdir = tempfile.mkdtemp(prefix="ddbvault-demo-")
    with moto_server(os.path.join(workdir, "moto.log")) as endpoint:
        os.environ.update(aws_environment(endpoint, REGION_A))
        print(f"stand-in AWS (moto server) at {endpoint}; logs in {workdir}")
        t = time.time()
        create_source(endpoint)
        print(f"region A ({REGION_A}): table {TABLE} with {ITEMS} orders, a GSI, an LSI, TTL, tags, PITR and a "
              f"stream ({time.time() - t:.1f}s)")
        vault = f"s3://{BUCKET}/vaults/{TABLE}"
        region_flags = ["--vault-region", REGION_B]

        export = run_job(f"export {TABLE} from {REGION_A} into the vault {vault} (bucket in {REGION_B})",
                         ["export_table.py", "--table", TABLE, "--region", REGION_A, "--vault", vault,
                          "--max-read-units", "500", "--segments", SEGMENTS, *region_flags])

        print(f"\n== business as usual in {REGION_A}: {business_as_usual(random.Random(7))}")
        next_second()
        good_moment = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        good_state = table_texts(REGION_A)
        next_second()
        print(f"== {good_moment}: the last good second; then a bad deploy: {bad_deploy()}")
        next_second()
        merge = run_job("merge the table's stream into the vault (what --follow 60 would do every minute)",
                        ["merge_increments.py", "--table", TABLE, "--region", REGION_A, "--vault", vault,
                         *region_flags])

        boto3.client("dynamodb", region_name=REGION_A).delete_table(TableName=TABLE)
        os.environ.update(aws_environment(endpoint, REGION_B))
        print(f"\n== outage: region {REGION_A} is gone (its table deleted); from here on only {REGION_B} is used")

        restore = run_job(f"restore {TABLE} into {REGION_B} from the vault alone, as it was at {good_moment}",
                          ["restore_table.py", "--vault", vault, "--table", TABLE, "--region", REGION_B,
                           "--as-of-time", good_moment, "--max-write-units", "2000", *region_flags])
        verify = run_job(f"verify the replica in {REGION_B} against the vault at {good_moment}",
                         ["verify_replica.py", "--vault", vault, "--table", TABLE, "--region", REGION_B,
                          "--as-of-time", good_moment, *region_flags])
        if table_texts(REGION_B) != good_state:
            raise SystemExit(f"demo: the replica differs from what the table held at {good_moment}")

        ddb_b = boto3.client("dynamodb", region_name=REGION_B)
        replica = ddb_b.describe_table(TableName=TABLE)["Table"]
        ttl = ddb_b.describe_time_to_live(TableName=TABLE)["TimeToLiveDescription"]
        tags = ddb_b.list_tags_of_resource(ResourceArn=replica["TableArn"])["Tags"]
        print("\n== what happened")
        print(f"export : {export['items']} items in {export['scan_write_s']}s of scanning and writing "
              f"({export['wall_s']}s with Spark start), {export['consumed_rcu']} RCU consumed, "
              f"vault version {export['vault_version']}")
        print(f"merge  : {merge['records_new']} stream records ({merge['inserts']} inserts, {merge['modifies']} "
              f"modifies, {merge['removes']} removes) in {merge['merge_s']}s ({merge['wall_s']}s with Spark start); "
              f"recoverable until {merge['recoverable_until']}")
        print(f"restore: {restore['items']} items as of {restore['as_of_time']} in {restore['load_s']}s of loading "
              f"({restore['wall_s']}s in all), "
              f"{restore['consumed_wcu']} WCU consumed; {'; '.join(restore['notes'])}")
        print(f"replica: {replica['TableStatus']}, {replica['BillingModeSummary']['BillingMode']}, "
              f"GSIs {[g['IndexName'] for g in replica.get('GlobalSecondaryIndexes', [])]}, "
              f"LSIs {[i['IndexName'] for i in replica.get('LocalSecondaryIndexes', [])]}, "
              f"stream {replica.get('StreamSpecification', {}).get('StreamViewType')}, "
              f"TTL on {ttl.get('AttributeName')}, tags {sorted(t['Key'] for t in tags)}")
        print(f"verify : {verify['same']} same, {verify['missing']} missing, {verify['extra']} extra, "
              f"{verify['different']} different ({verify['wall_s']}s); the replica also equals the table's own scan "
              f"at {good_moment} ({len(good_state)} items), before the bad deploy")
        print(json.dumps({k: verify[k] for k in ("job", "status", "as_of_time", "vault_items", "replica_items",
                                                 "same", "missing", "extra", "different")}, sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
