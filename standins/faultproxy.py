"""A fault-injecting HTTP proxy between boto3 and moto server, for DynamoDB tests.

Point ``AWS_ENDPOINT_URL_DYNAMODB`` at ``proxy.url``: requests are forwarded unchanged (Host header and
signature included; moto does not verify signatures) unless a rule matches the DynamoDB operation (the
suffix of the ``X-Amz-Target`` header, e.g. ``Scan``, ``BatchWriteItem``). Faults:

- ``throttle``: HTTP 400 with the JSON body DynamoDB sends; ``code`` = ProvisionedThroughputExceededException
  (default), ThrottlingException or RequestLimitExceeded;
- ``server_error``: HTTP 500 InternalServerError;
- ``unprocessed``: BatchWriteItem only: forward the first ``keep`` put requests of the call and hand the rest
  back as ``UnprocessedItems`` in a 200 response (Content-Length and x-amz-crc32 recomputed);
- ``strip_consumed``: forward, then remove ``ConsumedCapacity`` from the answer (moto's figures are constants).

When a rule fires, by the count ``n`` (1-based) of requests it has matched so far: ``first=N`` (n <= N),
``every=N`` (n % N == 0), ``after=M`` (n > M: the first M pass, then fail forever, an outage mid-job), or
always. The first rule that fires decides. Counters: requests per operation, and per rule ``matched`` and
``injected``. ``record=True`` keeps every request body (parsed JSON) per operation for assertions.

In-process: ``with FaultProxy(moto_url) as proxy: proxy.set_rules([...])``. Across processes (Spark
executors, jobs run as subprocesses): ``python standins/faultproxy.py --target URL --port P --rule
'Scan:throttle:first=3'`` and change rules at run time with ``POST /__faults__`` (JSON
``{"rules": [...], "record": bool, "reset": bool}``); ``GET /__faults__`` returns counters and
``GET /__faults__/requests`` the recorded bodies. Stdlib only.
"""
from __future__ import annotations

import argparse
import http.client
import json
import threading
import urllib.parse
import urllib.request
import zlib
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Dict, List, Optional, Sequence, TypeVar, Union

CONTROL_PATH = "/__faults__"
FAULTS = ("throttle", "server_error", "unprocessed", "strip_consumed")
THROTTLE_TYPES = {
    "ProvisionedThroughputExceededException": "com.amazonaws.dynamodb.v20120810#",
    "ThrottlingException": "com.amazon.coral.availability#",
    "RequestLimitExceeded": "com.amazonaws.dynamodb.v20120810#",
}
THROTTLE_MESSAGES = {
    "ProvisionedThroughputExceededException": (
        "The level of configured provisioned throughput for the table was exceeded. "
        "Consider increasing your provisioning level with the UpdateTable API."),
    "ThrottlingException": "Throughput exceeds the current capacity of your table or index.",
    "RequestLimitExceeded": "Throughput exceeds the current throughput limit for your account.",
}
# Not relayed from the target: connection-level headers, the ones we recompute, and the ones
# BaseHTTPRequestHandler.send_response adds itself.
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "content-length", "x-amz-crc32",
               "proxy-connection", "te", "trailer", "upgrade", "server", "date"}


@dataclass
class Rule:
    """One fault rule; see the module docstring. ``keep`` is for ``unprocessed``, ``code`` for ``throttle``."""

    op: str
    fault: str
    first: Optional[int] = None
    every: Optional[int] = None
    after: Optional[int] = None
    code: str = "ProvisionedThroughputExceededException"
    keep: int = 0
    status: Optional[int] = None
    matched: int = 0
    injected: int = 0

    def __post_init__(self) -> None:
        if self.fault not in FAULTS:
            raise ValueError(f"unknown fault {self.fault!r}; one of {FAULTS}")
        if self.fault == "throttle" and self.code not in THROTTLE_TYPES:
            raise ValueError(f"unknown throttle code {self.code!r}; one of {sorted(THROTTLE_TYPES)}")
        if sum(x is not None for x in (self.first, self.every, self.after)) > 1:
            raise ValueError("a rule takes at most one of first=, every=, after=")

    def fires(self) -> bool:
        """Count one matching request; True when this one gets the fault (call under the proxy's lock)."""
        self.matched += 1
        n = self.matched
        if self.first is not None:
            hit = n <= self.first
        elif self.every is not None:
            hit = n % self.every == 0
        elif self.after is not None:
            hit = n > self.after
        else:
            hit = True
        if hit:
            self.injected += 1
        return hit

    @classmethod
    def parse(cls, spec: Union[str, Dict[str, Any], Rule]) -> Rule:
        """A Rule from a dict, a JSON object text, or ``op:fault[:key=value,...]`` (``Scan:throttle:first=3``)."""
        if isinstance(spec, Rule):
            return spec
        if isinstance(spec, dict):
            return cls(**spec)
        text = spec.strip()
        if text.startswith("{"):
            return cls(**json.loads(text))
        parts = text.split(":", 2)
        if len(parts) < 2:
            raise ValueError(f"rule {spec!r} is not op:fault[:key=value,...]")
        args: Dict[str, Any] = {"op": parts[0], "fault": parts[1]}
        if len(parts) == 3 and parts[2]:
            for pair in parts[2].split(","):
                key, _, value = pair.partition("=")
                args[key] = value if key == "code" else int(value)
        return cls(**args)


@dataclass
class _State:
    rules: List[Rule] = field(default_factory=list)
    requests: Dict[str, int] = field(default_factory=dict)
    record: bool = False
    recorded: Dict[str, List[Any]] = field(default_factory=dict)


Served = TypeVar("Served", bound="LoopbackServer")


class LoopbackServer:
    """A stand-in served on a loopback port by a daemon thread (``_server``, set by the subclass): its URL, start
    and stop, and ``with`` for both."""

    _server: ThreadingHTTPServer
    _thread: Optional[threading.Thread] = None
    thread_name = "standin"

    def _forward_to(self, target: str) -> None:
        """Where a proxy forwards to: ``target_host`` and ``target_port`` of an http:// URL."""
        parsed = urllib.parse.urlsplit(target)
        if parsed.scheme != "http" or not parsed.hostname:
            raise ValueError(f"target must be an http:// URL, not {target!r}")
        self.target_host = parsed.hostname
        self.target_port = parsed.port or 80

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self: Served) -> Served:
        self._thread = threading.Thread(target=self._server.serve_forever, name=self.thread_name, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join()

    def __enter__(self: Served) -> Served:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class FaultProxy(LoopbackServer):
    """The proxy server on 127.0.0.1 (a background thread). ``url`` is where boto3 should send requests."""

    thread_name = "faultproxy"

    def __init__(self, target: str, port: int = 0, rules: Sequence[Any] = (), record: bool = False) -> None:
        self._forward_to(target)
        self._lock = threading.Lock()
        self._state = _State(rules=[Rule.parse(r) for r in rules], record=record)
        self._server = ThreadingHTTPServer(("127.0.0.1", port), _make_handler(self))
        self._server.daemon_threads = True

    # -- control ---------------------------------------------------------------------------------------

    def set_rules(self, rules: Sequence[Any], *, record: Optional[bool] = None, reset: bool = True) -> None:
        """Replace the rules (counters restart when ``reset``); ``record`` turns body recording on or off."""
        parsed = [Rule.parse(r) for r in rules]
        with self._lock:
            self._state.rules = parsed
            if record is not None:
                self._state.record = record
            if reset:
                self._state.requests = {}
                self._state.recorded = {}

    def reset(self) -> None:
        """No rules, no counters, no recording: a plain forwarder again."""
        with self._lock:
            self._state = _State()

    def counters(self) -> Dict[str, Any]:
        """``{"requests": {op: n}, "rules": [rule as dict with matched/injected], "injected": {op:fault: n}}``."""
        with self._lock:
            injected: Dict[str, int] = {}
            for rule in self._state.rules:
                name = f"{rule.op}:{rule.fault}"
                injected[name] = injected.get(name, 0) + rule.injected
            return {"requests": dict(self._state.requests),
                    "rules": [asdict(r) for r in self._state.rules],
                    "injected": injected}

    def recorded(self, op: str) -> List[Any]:
        """The parsed JSON bodies of every ``op`` request seen while recording, in arrival order."""
        with self._lock:
            return list(self._state.recorded.get(op, []))

    def _decide(self, op: str, body: bytes) -> Optional[Rule]:
        with self._lock:
            self._state.requests[op] = self._state.requests.get(op, 0) + 1
            if self._state.record:
                try:
                    self._state.recorded.setdefault(op, []).append(json.loads(body or b"null"))
                except ValueError:
                    self._state.recorded.setdefault(op, []).append(body.decode("latin-1"))
            for rule in self._state.rules:
                if rule.op in (op, "*") and rule.fires():
                    return rule
        return None

    def _control(self, method: str, path: str, body: bytes) -> Any:
        if method == "GET" and path == CONTROL_PATH + "/requests":
            with self._lock:
                return {op: list(bodies) for op, bodies in self._state.recorded.items()}
        if method == "POST":
            doc = json.loads(body or b"{}")
            if doc.get("clear"):
                self.reset()
            if "rules" in doc:
                self.set_rules(doc["rules"], record=doc.get("record"), reset=doc.get("reset", True))
            elif "record" in doc:
                with self._lock:
                    self._state.record = bool(doc["record"])
        elif method == "DELETE":
            self.reset()
        return self.counters()


def _error_body(code: str, message: str, prefix: str = "com.amazonaws.dynamodb.v20120810#") -> bytes:
    return json.dumps({"__type": prefix + code, "message": message}).encode()


def _make_handler(proxy: FaultProxy) -> type:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive: botocore reuses connections
        # Small replies must not wait for the client's delayed ACK (Nagle): that costs ~40 ms a request.
        disable_nagle_algorithm = True

        def log_message(self, format: str, *args: Any) -> None:
            pass

        def _body(self) -> bytes:
            length = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(length) if length else b""

        def _reply(self, status: int, body: bytes, headers: Sequence[Any] = ()) -> None:
            self.send_response(status)
            for name, value in headers:
                if name.lower() not in _HOP_BY_HOP:
                    self.send_header(name, value)
            if not any(name.lower() == "content-type" for name, _ in headers):
                self.send_header("Content-Type", "application/x-amz-json-1.0")
            self.send_header("Content-Length", str(len(body)))
            # botocore checks x-amz-crc32 on DynamoDB answers when present: recompute it for our bodies.
            self.send_header("x-amz-crc32", str(zlib.crc32(body) & 0xFFFFFFFF))
            self.end_headers()
            self.wfile.write(body)

        def _forward(self, body: bytes) -> tuple:
            conn = http.client.HTTPConnection(proxy.target_host, proxy.target_port, timeout=120)
            try:
                headers = {k: v for k, v in self.headers.items() if k.lower() not in ("content-length",
                                                                                      "connection")}
                headers["Content-Length"] = str(len(body))
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                return response.status, response.getheaders(), response.read()
            finally:
                conn.close()

        def _handle(self) -> None:
            body = self._body()
            path = self.path.split("?", 1)[0]
            if path.startswith(CONTROL_PATH):
                answer = json.dumps(proxy._control(self.command, path, body)).encode()
                self._reply(200, answer, [("Content-Type", "application/json")])
                return
            target = self.headers.get("X-Amz-Target") or ""
            op = target.rsplit(".", 1)[-1] if target else ""
            rule = proxy._decide(op, body) if op else None
            if rule is None:
                self._reply(*self._relay(body))
            elif rule.fault == "throttle":
                self._reply(rule.status or 400, _error_body(rule.code, THROTTLE_MESSAGES[rule.code],
                                                            THROTTLE_TYPES[rule.code]))
            elif rule.fault == "server_error":
                self._reply(rule.status or 500, _error_body("InternalServerError", "Internal server error"))
            elif rule.fault == "unprocessed" and op == "BatchWriteItem":
                self._reply(*self._unprocessed(body, rule.keep))
            elif rule.fault == "strip_consumed":
                status, headers, answer = self._forward(body)
                if status == 200:
                    doc = json.loads(answer or b"{}")
                    doc.pop("ConsumedCapacity", None)
                    answer = json.dumps(doc).encode()
                self._reply(status, answer, headers)
            else:
                self._reply(*self._relay(body))

        def _relay(self, body: bytes) -> tuple:
            status, headers, answer = self._forward(body)
            return status, answer, headers

        def _unprocessed(self, body: bytes, keep: int) -> tuple:
            doc = json.loads(body)
            kept: Dict[str, List[Any]] = {}
            deferred: Dict[str, List[Any]] = {}
            budget = keep
            for table, requests in doc.get("RequestItems", {}).items():
                for request in requests:
                    if budget > 0:
                        kept.setdefault(table, []).append(request)
                        budget -= 1
                    else:
                        deferred.setdefault(table, []).append(request)
            if kept:
                doc["RequestItems"] = kept
                status, headers, answer = self._forward(json.dumps(doc).encode())
                if status != 200:
                    return status, answer, headers
                result = json.loads(answer or b"{}")
            else:
                headers, result = [], {}
            unprocessed = result.get("UnprocessedItems") or {}
            for table, requests in deferred.items():
                unprocessed.setdefault(table, []).extend(requests)
            result["UnprocessedItems"] = unprocessed
            return 200, json.dumps(result).encode(), headers

        def do_GET(self) -> None:
            self._handle()

        def do_POST(self) -> None:
            self._handle()

        def do_PUT(self) -> None:
            self._handle()

        def do_DELETE(self) -> None:
            self._handle()

        def do_HEAD(self) -> None:
            self._handle()

    return Handler


def control(proxy_url: str, rules: Optional[Sequence[Any]] = None, *, record: Optional[bool] = None,
            clear: bool = False) -> Dict[str, Any]:
    """Set rules on a proxy in another process (or just read its counters when nothing is given)."""
    doc: Dict[str, Any] = {}
    if clear:
        doc["clear"] = True
    if rules is not None:
        doc["rules"] = [asdict(Rule.parse(r)) if not isinstance(r, dict) else r for r in rules]
    if record is not None:
        doc["record"] = record
    if doc:
        request = urllib.request.Request(proxy_url + CONTROL_PATH, data=json.dumps(doc).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
    else:
        request = urllib.request.Request(proxy_url + CONTROL_PATH)
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def main(argv: Optional[Sequence[str]] = None) -> None:
    parser = argparse.ArgumentParser(description="Fault-injecting proxy in front of a DynamoDB endpoint.")
    parser.add_argument("--target", required=True, help="the real endpoint, e.g. http://127.0.0.1:5000")
    parser.add_argument("--port", type=int, default=0, help="port to listen on (0 = any free port)")
    parser.add_argument("--rule", action="append", default=[],
                        help="op:fault[:first=N|every=N|after=M,code=...,keep=K] or a JSON object; repeatable")
    parser.add_argument("--record", action="store_true", help="keep request bodies for GET /__faults__/requests")
    args = parser.parse_args(argv)
    proxy = FaultProxy(args.target, port=args.port, rules=args.rule, record=args.record)
    print(proxy.url, flush=True)
    try:
        proxy._server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        proxy._server.server_close()


if __name__ == "__main__":
    main()
