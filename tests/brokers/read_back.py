"""Reads back what hookgate published, with each broker's own Python client
(pika, nats-py, redis-py), as a user's consumer would; prints one JSON object.
Env: NATS_URL, NATS_SUBJECT, AMQP_QUEUE, REDIS_PORT, REDIS_STREAM."""
import asyncio
import json
import os

import nats
import pika
import redis

out = {}

conn = pika.BlockingConnection(
    pika.ConnectionParameters("127.0.0.1", 5672, "/", pika.PlainCredentials("guest", "guest")))
ch = conn.channel()
_, props, body = ch.basic_get(os.environ["AMQP_QUEUE"], auto_ack=True)
out["amqp"] = {
    "body": body.decode(),
    "message_id": props.message_id,
    "delivery_mode": props.delivery_mode,
    "content_type": props.content_type,
    "headers": {k: (v.decode() if isinstance(v, bytes) else v) for k, v in (props.headers or {}).items()},
}
conn.close()

r = redis.Redis(host="127.0.0.1", port=int(os.environ["REDIS_PORT"]))
entries = r.xrange(os.environ["REDIS_STREAM"])
out["redis"] = [{k.decode(): v.decode() for k, v in fields.items()} for _, fields in entries]


async def read_nats():
    nc = await nats.connect(os.environ["NATS_URL"])
    js = nc.jetstream()
    sub = await js.pull_subscribe(os.environ["NATS_SUBJECT"], "read-back")
    msgs = await sub.fetch(1, timeout=5)
    await nc.close()
    return [{"subject": m.subject, "body": m.data.decode(), "headers": dict(m.headers or {})} for m in msgs]

out["nats"] = asyncio.run(read_nats())
print(json.dumps(out))
