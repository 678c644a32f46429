"""GetRecords through the JSON fast path (``streams.RAW_RECORDS_EVENTS``) gives the very change rows botocore's own
parsing gives: every attribute type, binary and number keys, INSERT, MODIFY and REMOVE (moto's stream)."""
from __future__ import annotations

from datetime import datetime, timedelta, timezone

from jobs_helpers import create_table, every_type, name, put_items

from ddbvault import aws
from ddbvault.changes import records, shards, streams
from servers import REGION_A


def test_raw_records_give_the_rows_botocore_gives(ddb, monkeypatch):
    client, made = ddb
    table = name("raw-records")
    create_table(client, table, [("pk", "B"), ("sk", "N")], stream="NEW_AND_OLD_IMAGES")
    made.append(table)
    items = [dict(every_type(i), pk={"B": bytes([i, 0, 255])}, sk={"N": str(i * 7 - 3) + ".25"}) for i in range(12)]
    put_items(client, table, items)
    client.update_item(TableName=table, Key={"pk": items[3]["pk"], "sk": items[3]["sk"]},
                       UpdateExpression="SET s = :v", ExpressionAttributeValues={":v": {"S": "changed \u00e9"}})
    client.delete_item(TableName=table, Key={"pk": items[5]["pk"], "sk": items[5]["sk"]})
    arn = client.describe_table(TableName=table)["Table"]["LatestStreamArn"]
    shard_ids = [s["ShardId"] for s in aws.client("dynamodbstreams", REGION_A).describe_stream(
        StreamArn=arn)["StreamDescription"]["Shards"]]
    plan = streams.ReadPlan(arn, REGION_A, "pk", "sk", datetime.now(timezone.utc) + timedelta(minutes=5), "run")

    def rows(client_):
        out = []
        for shard_id in shard_ids:
            task = shards.ShardTask(shard_id, 0, "TRIM_HORIZON", None, False)
            out += list(streams.read_shard(plan, task, client=client_, sleep=lambda s: None))
        return out

    monkeypatch.setattr(aws, "_clients", {})
    fast = rows(None)  # read_shard's own client: the fast path
    plain = rows(aws.client("dynamodbstreams", REGION_A, data_plane=True))
    changes = [r for r in fast if isinstance(r, tuple)]
    assert [r[2] for r in changes] == ["INSERT"] * 12 + ["MODIFY", "REMOVE"]
    assert fast == plain
    assert len(changes[0]) == len(records.CHANGE_COLUMNS)
