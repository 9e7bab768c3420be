#!/usr/bin/env python3
"""gRPC echo server and scenario client for testing HTTP/2 proxies (h2 client -> proxy -> h2 upstream).

Uses python3-grpcio only (Debian: apt-get install python3-grpcio). There is no protoc and no generated
code: every method of the service `portico.test.Echo` takes and returns raw bytes (identity
serializers); structured requests are small JSON documents.

    grpc_echo.py server --port 0 [--tls CERT KEY]
        Listens on 127.0.0.1, prints "LISTENING <port>" on stdout once bound, serves until stdin
        reaches EOF (unless --ignore-stdin) or SIGTERM/SIGINT.

    grpc_echo.py client --target HOST:PORT [--tls --ca CA] [--authority NAME] [--concurrency N]
        Runs every scenario, prints one "PASS|FAIL <scenario> <detail>" line each and a closing
        "N passed, N failed" line; exits 0 only if all passed.

See tests/grpc/README.md for what each scenario checks and why it matters for a proxy.
"""

from __future__ import annotations

import argparse
import json
import queue
import random
import signal
import sys
import threading
import time
import uuid
from concurrent import futures

try:
    import grpc
except ImportError:  # pragma: no cover - environment problem, reported plainly
    sys.stderr.write("grpc_echo.py: the grpc module is missing (Debian: apt-get install python3-grpcio)\n")
    sys.exit(2)

SERVICE = "portico.test.Echo"
MAX_MESSAGE = 16 * 1024 * 1024  # both sides: well above the 1 MiB scenario, below grpc's defaults' trouble

FAIL_CODE = grpc.StatusCode.FAILED_PRECONDITION
# '%' and non-ASCII characters check that grpc-message's percent-encoding survives the proxy intact.
FAIL_MESSAGE = "portico says no (100% sure, \u00fcn\u00efcode \u2713)"
FAIL_DETAIL = "detail from the upstream: x=1; y=2"
FAIL_DETAIL_BIN = bytes(range(256))[::7]  # arbitrary binary, carried base64-encoded in a -bin key


def _identity(b):
    return b


def _pattern(index: int, size: int) -> bytes:
    """Deterministic payload for streamed message number `index`."""
    base = bytes(range(256)) * (size // 256 + 2)
    start = index % 256
    return base[start:start + size]


def _log(msg: str) -> None:
    sys.stderr.write(f"[grpc_echo] {msg}\n")
    sys.stderr.flush()


# ----------------------------------------------------------------------------------------------
# server
# ----------------------------------------------------------------------------------------------


class EchoService:
    """Handlers of portico.test.Echo. Slow calls are recorded by token so that a client can ask,
    through the `Cancelled` method, whether and when the server saw them cancelled."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._slow: dict[str, dict] = {}
        self._slow_calls = 0
        self._slow_cancelled = 0

    # -- helpers --------------------------------------------------------------------------------
    @staticmethod
    def _initial_md(context) -> None:
        md = [("x-portico-peer", context.peer())]
        for k, v in context.invocation_metadata():
            if k == "x-portico-req":
                md.append(("x-portico-echo", v))
        context.send_initial_metadata(md)

    # -- methods --------------------------------------------------------------------------------
    def unary(self, request: bytes, context) -> bytes:
        self._initial_md(context)
        context.set_trailing_metadata([("x-portico-len", str(len(request)))])
        return request

    def server_stream(self, request: bytes, context):
        try:
            req = json.loads(request or b"{}")
            count, size = int(req.get("count", 1)), int(req.get("size", 0))
            fail_after = req.get("fail_after")
        except (ValueError, TypeError) as e:
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad request: {e}")
        self._initial_md(context)
        for i in range(count):
            if fail_after is not None and i == int(fail_after):
                context.set_trailing_metadata([("x-portico-detail", FAIL_DETAIL)])
                context.abort(FAIL_CODE, FAIL_MESSAGE)
            if not context.is_active():
                return
            yield _pattern(i, size)
        context.set_trailing_metadata([("x-portico-count", str(count))])

    def client_stream(self, request_iterator, context) -> bytes:
        total = 0
        messages = 0
        for msg in request_iterator:
            total += len(msg)
            messages += 1
        context.set_trailing_metadata([("x-portico-messages", str(messages))])
        return str(total).encode()

    def bidi(self, request_iterator, context):
        self._initial_md(context)
        for msg in request_iterator:
            yield msg

    def fail(self, request: bytes, context) -> bytes:
        code, message, detail = FAIL_CODE, FAIL_MESSAGE, FAIL_DETAIL
        if request:
            try:
                req = json.loads(request)
                code = grpc.StatusCode[req.get("code", code.name)]
                message = req.get("message", message)
                detail = req.get("detail", detail)
            except (ValueError, KeyError) as e:
                context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"bad request: {e}")
        context.set_trailing_metadata([
            ("x-portico-detail", detail),
            ("x-portico-detail-bin", FAIL_DETAIL_BIN),
        ])
        context.abort(code, message)

    def slow(self, request: bytes, context) -> bytes:
        req = json.loads(request or b"{}")
        token = str(req.get("token", uuid.uuid4().hex))
        sleep_s = float(req.get("sleep", 30.0))
        done = threading.Event()
        context.add_callback(done.set)  # runs when the RPC terminates: cancel, deadline or end
        start = time.monotonic()
        rec = {
            "started": True,
            "time_remaining_at_start": context.time_remaining(),  # None: no grpc-timeout arrived
            "cancelled": False,
            "cancelled_after_s": None,
            "completed": False,
        }
        with self._lock:
            self._slow[token] = rec
            self._slow_calls += 1
        # Wake up on the termination callback, and poll is_active() as a second signal.
        while time.monotonic() - start < sleep_s:
            if done.wait(0.02) or not context.is_active():
                with self._lock:
                    rec["cancelled"] = True
                    rec["cancelled_after_s"] = round(time.monotonic() - start, 3)
                    self._slow_cancelled += 1
                return b""
        with self._lock:
            rec["completed"] = True
        return b"slept"

    def cancelled(self, request: bytes, context) -> bytes:
        """{"token": T} -> the record of Slow call T ({} if unknown);
        no token -> {"slow_calls": n, "slow_cancelled": m} for the whole server."""
        req = json.loads(request or b"{}")
        with self._lock:
            if "token" in req:
                out = dict(self._slow.get(str(req["token"]), {}))
            else:
                out = {"slow_calls": self._slow_calls, "slow_cancelled": self._slow_cancelled}
        return json.dumps(out).encode()

    def info(self, request: bytes, context) -> bytes:
        """What the server saw of this call: peer, request metadata, remaining deadline."""
        return json.dumps({
            "peer": context.peer(),
            "metadata": [[k, v if isinstance(v, str) else v.hex()] for k, v in context.invocation_metadata()],
            "time_remaining": context.time_remaining(),
        }).encode()

    def handler(self):
        kw = dict(request_deserializer=_identity, response_serializer=_identity)
        return grpc.method_handlers_generic_handler(SERVICE, {
            "Unary": grpc.unary_unary_rpc_method_handler(self.unary, **kw),
            "ServerStream": grpc.unary_stream_rpc_method_handler(self.server_stream, **kw),
            "ClientStream": grpc.stream_unary_rpc_method_handler(self.client_stream, **kw),
            "Bidi": grpc.stream_stream_rpc_method_handler(self.bidi, **kw),
            "Fail": grpc.unary_unary_rpc_method_handler(self.fail, **kw),
            "Slow": grpc.unary_unary_rpc_method_handler(self.slow, **kw),
            "Cancelled": grpc.unary_unary_rpc_method_handler(self.cancelled, **kw),
            "Info": grpc.unary_unary_rpc_method_handler(self.info, **kw),
        })


def run_server(args) -> int:
    service = EchoService()
    options = [
        ("grpc.max_receive_message_length", MAX_MESSAGE),
        ("grpc.max_send_message_length", MAX_MESSAGE),
        ("grpc.so_reuseport", 0),
    ]
    # The sync server holds one thread per active streaming call: size the pool for the
    # concurrency scenario (N bidi streams open at once) plus slack.
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=args.workers), options=options,
                         handlers=[service.handler()])
    addr = f"{args.host}:{args.port}"
    if args.tls:
        cert_file, key_file = args.tls
        with open(cert_file, "rb") as f:
            cert = f.read()
        with open(key_file, "rb") as f:
            key = f.read()
        port = server.add_secure_port(addr, grpc.ssl_server_credentials([(key, cert)]))
    else:
        port = server.add_insecure_port(addr)
    if not port:
        _log(f"could not bind {addr}")
        return 1
    server.start()

    stop = threading.Event()

    def on_signal(signum, _frame):
        _log(f"signal {signum}, stopping")
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    if not args.ignore_stdin:
        def watch_stdin():
            try:
                while sys.stdin.buffer.read(4096):
                    pass
            except (OSError, ValueError):
                pass
            _log("stdin closed, stopping")
            stop.set()
        threading.Thread(target=watch_stdin, daemon=True).start()

    print(f"LISTENING {port}", flush=True)
    _log(f"serving {SERVICE} on {args.host}:{port} ({'TLS' if args.tls else 'plaintext h2c'})")
    while not stop.wait(0.5):
        pass
    server.stop(grace=1.0).wait(3.0)
    return 0


# ----------------------------------------------------------------------------------------------
# client
# ----------------------------------------------------------------------------------------------


class ScenarioFailed(Exception):
    pass


def check(cond: bool, msg: str) -> None:
    if not cond:
        raise ScenarioFailed(msg)


def _md(pairs) -> dict:
    return {k: v for k, v in (pairs or ())}


def _rpc_err(e: grpc.RpcError) -> str:
    try:
        return f"{e.code().name}: {e.details()!r}"
    except Exception:  # noqa: BLE001 - any RpcError shape
        return repr(e)


class Client:
    def __init__(self, args) -> None:
        self.args = args
        self.t = args.call_timeout
        options = [
            ("grpc.max_receive_message_length", MAX_MESSAGE),
            ("grpc.max_send_message_length", MAX_MESSAGE),
            # No transparent retries: a stream the proxy refused must show up as a failure.
            ("grpc.enable_retries", 0),
        ]
        if args.authority:
            options.append(("grpc.default_authority", args.authority))
        if args.tls:
            root = None
            if args.ca:
                with open(args.ca, "rb") as f:
                    root = f.read()
            if args.authority:
                options.append(("grpc.ssl_target_name_override", args.authority))
            self.channel = grpc.secure_channel(args.target, grpc.ssl_channel_credentials(root_certificates=root),
                                               options=options)
        else:
            self.channel = grpc.insecure_channel(args.target, options=options)
        ch = self.channel
        kw = dict(request_serializer=None, response_deserializer=None)
        self.unary = ch.unary_unary(f"/{SERVICE}/Unary", **kw)
        self.server_stream = ch.unary_stream(f"/{SERVICE}/ServerStream", **kw)
        self.client_stream = ch.stream_unary(f"/{SERVICE}/ClientStream", **kw)
        self.bidi = ch.stream_stream(f"/{SERVICE}/Bidi", **kw)
        self.fail = ch.unary_unary(f"/{SERVICE}/Fail", **kw)
        self.slow = ch.unary_unary(f"/{SERVICE}/Slow", **kw)
        self.cancelled = ch.unary_unary(f"/{SERVICE}/Cancelled", **kw)
        self.info = ch.unary_unary(f"/{SERVICE}/Info", **kw)

    def close(self) -> None:
        self.channel.close()

    # -- scenarios ------------------------------------------------------------------------------
    def s_connect(self) -> str:
        try:
            grpc.channel_ready_future(self.channel).result(timeout=self.t)
        except grpc.FutureTimeoutError:
            raise ScenarioFailed(f"channel not ready within {self.t}s") from None
        info = json.loads(self.info(b"", timeout=self.t, metadata=[("x-portico-req", "info")]))
        md = _md(info["metadata"])
        check(md.get("x-portico-req") == "info", f"request metadata not seen by the server: {info['metadata']}")
        return f"server saw peer {info['peer']}, metadata keys {sorted(md)}"

    def _unary_check(self, payload: bytes) -> str:
        resp, call = self.unary.with_call(payload, timeout=self.t, metadata=[("x-portico-req", "abc-123")])
        check(resp == payload, f"echo mismatch: sent {len(payload)} bytes, got {len(resp)}")
        check(call.code() == grpc.StatusCode.OK, f"status {call.code()}")
        init, trail = _md(call.initial_metadata()), _md(call.trailing_metadata())
        check(init.get("x-portico-echo") == "abc-123", f"initial metadata x-portico-echo missing: {init}")
        check(trail.get("x-portico-len") == str(len(payload)), f"trailing metadata x-portico-len wrong: {trail}")
        return f"{len(payload)} bytes echoed, initial+trailing metadata intact"

    def s_unary_small(self) -> str:
        return self._unary_check(b"hello portico")

    def s_unary_empty(self) -> str:
        return self._unary_check(b"")

    def s_unary_1mib(self) -> str:
        return self._unary_check(random.Random(1).randbytes(1 << 20))

    def s_server_stream(self) -> str:
        count, size = 100, 1024
        call = self.server_stream(json.dumps({"count": count, "size": size}).encode(), timeout=self.t)
        got = 0
        for i, msg in enumerate(call):
            check(msg == _pattern(i, size), f"message {i}: wrong content ({len(msg)} bytes)")
            got += 1
        check(got == count, f"got {got} messages, want {count}")
        check(call.code() == grpc.StatusCode.OK, f"status {call.code()}")
        check(_md(call.trailing_metadata()).get("x-portico-count") == str(count),
              f"trailing metadata: {call.trailing_metadata()}")
        return f"{got} x {size} bytes, trailers intact"

    def s_server_stream_error(self) -> str:
        """Status sent in trailers after DATA frames (not Trailers-Only)."""
        call = self.server_stream(json.dumps({"count": 10, "size": 100, "fail_after": 3}).encode(), timeout=self.t)
        got = 0
        try:
            for i, msg in enumerate(call):
                check(msg == _pattern(i, 100), f"message {i}: wrong content")
                got += 1
            raise ScenarioFailed(f"stream ended OK after {got} messages, want {FAIL_CODE.name}")
        except grpc.RpcError as e:
            check(e.code() == FAIL_CODE, f"got {_rpc_err(e)}, want {FAIL_CODE.name}")
            check(e.details() == FAIL_MESSAGE, f"message {e.details()!r}, want {FAIL_MESSAGE!r}")
            check(_md(e.trailing_metadata()).get("x-portico-detail") == FAIL_DETAIL,
                  f"trailing metadata: {e.trailing_metadata()}")
        check(got == 3, f"got {got} messages before the error, want 3")
        return "3 messages then FAILED_PRECONDITION with message and trailers"

    def s_client_stream(self) -> str:
        sizes = [0, 1, 5, 100, 1000, 16384, 65535, 65536, 100000] + [777] * 50
        msgs = [bytes([i % 256]) * n for i, n in enumerate(sizes)]
        resp, call = self.client_stream.with_call(iter(msgs), timeout=self.t)
        check(resp == str(sum(sizes)).encode(), f"total {resp!r}, want {sum(sizes)}")
        check(_md(call.trailing_metadata()).get("x-portico-messages") == str(len(msgs)),
              f"server counted messages: {call.trailing_metadata()}")
        return f"{len(msgs)} messages, {sum(sizes)} bytes counted"

    def _open_bidi(self, timeout: float):
        """A bidi call fed from a queue; put None to half-close."""
        q: queue.Queue = queue.Queue()

        def requests():
            while True:
                try:
                    item = q.get(timeout=timeout)
                except queue.Empty:
                    return  # half-close rather than hang forever
                if item is None:
                    return
                yield item

        return q, self.bidi(requests(), timeout=timeout)

    def s_bidi_pingpong(self) -> str:
        q, call = self._open_bidi(self.t)
        try:
            for i in range(50):
                msg = f"ping {i} ".encode() + _pattern(i, i * 37)
                q.put(msg)
                resp = next(call)  # the proxy must forward each message before the stream ends
                check(resp == msg, f"round {i}: echo mismatch")
            q.put(None)
            rest = list(call)
            check(not rest, f"{len(rest)} unexpected extra messages")
            check(call.code() == grpc.StatusCode.OK, f"status {call.code()}")
        finally:
            q.put(None)
            call.cancel()
        return "50 send-one/read-one rounds"

    def s_error_status(self) -> str:
        try:
            self.fail(b"", timeout=self.t)
            raise ScenarioFailed("call succeeded, want an error")
        except grpc.RpcError as e:
            check(e.code() == FAIL_CODE, f"got {_rpc_err(e)}, want {FAIL_CODE.name}")
            check(e.details() == FAIL_MESSAGE, f"message {e.details()!r}, want {FAIL_MESSAGE!r}")
            trail = _md(e.trailing_metadata())
            check(trail.get("x-portico-detail") == FAIL_DETAIL, f"x-portico-detail: {trail}")
            check(trail.get("x-portico-detail-bin") == FAIL_DETAIL_BIN, f"x-portico-detail-bin: {trail}")
        # A second code, so a proxy that maps every failure to one status is caught.
        try:
            self.fail(json.dumps({"code": "RESOURCE_EXHAUSTED", "message": "quota", "detail": "d2"}).encode(),
                      timeout=self.t)
            raise ScenarioFailed("second call succeeded, want RESOURCE_EXHAUSTED")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and e.details() == "quota",
                  f"second call: {_rpc_err(e)}")
        return f"{FAIL_CODE.name} + percent-encoded message + text and -bin trailing metadata"

    def _wait_slow(self, token: str, key: str, limit: float) -> tuple[dict, float]:
        """Poll Cancelled(token) until record[key] is true or `limit` seconds pass."""
        start = time.monotonic()
        rec: dict = {}
        while time.monotonic() - start < limit:
            rec = json.loads(self.cancelled(json.dumps({"token": token}).encode(), timeout=self.t))
            if rec.get(key):
                return rec, time.monotonic() - start
            time.sleep(0.02)
        raise ScenarioFailed(f"server record for {token} has no {key!r} after {limit}s: {rec}")

    def s_deadline_exceeded(self) -> str:
        token = "deadline-" + uuid.uuid4().hex
        deadline = 0.2
        start = time.monotonic()
        try:
            self.slow(json.dumps({"token": token, "sleep": 30}).encode(), timeout=deadline)
            raise ScenarioFailed("Slow returned, want DEADLINE_EXCEEDED")
        except grpc.RpcError as e:
            check(e.code() == grpc.StatusCode.DEADLINE_EXCEEDED, f"got {_rpc_err(e)}, want DEADLINE_EXCEEDED")
        elapsed = time.monotonic() - start
        check(elapsed < deadline + 2.0, f"DEADLINE_EXCEEDED took {elapsed:.2f}s for a {deadline}s deadline")
        rec, _ = self._wait_slow(token, "cancelled", self.args.cancel_wait)
        rem = rec.get("time_remaining_at_start")
        grpc_timeout = "no grpc-timeout reached the server" if rem is None else f"server deadline {rem:.3f}s at start"
        return (f"client got DEADLINE_EXCEEDED after {elapsed:.3f}s; server saw the call end after "
                f"{rec['cancelled_after_s']}s ({grpc_timeout})")

    def s_cancel_propagation(self) -> str:
        """Client cancels a call with a far deadline: only RST_STREAM forwarded by the proxy (not the
        server's own grpc-timeout timer) can make the server see it quickly."""
        token = "cancel-" + uuid.uuid4().hex
        fut = self.slow.future(json.dumps({"token": token, "sleep": 30}).encode(), timeout=60)
        try:
            self._wait_slow(token, "started", self.t)
        finally:
            t0 = time.monotonic()
            fut.cancel()
        check(fut.cancelled(), "future not cancelled")
        rec, waited = self._wait_slow(token, "cancelled", self.args.cancel_wait)
        check(not rec.get("completed"), "Slow completed")
        return f"server saw the cancellation within {time.monotonic() - t0:.3f}s of cancel()"

    def s_concurrent(self) -> str:
        n = self.args.concurrency
        barrier = threading.Barrier(n + 1)
        errors: list[str] = []
        peers: set[str] = set()
        lock = threading.Lock()

        def note(err=None, peer=None):
            with lock:
                if err:
                    errors.append(err)
                if peer:
                    peers.add(peer)

        def bidi_worker(k: int):
            q, call = self._open_bidi(self.t)
            try:
                msg = f"stream {k} first".encode()
                q.put(msg)
                check(next(call) == msg, "first echo mismatch")
                note(peer=_md(call.initial_metadata()).get("x-portico-peer"))
                barrier.wait(timeout=self.t)  # all n streams are open on the channel at this point
                for j in range(5):
                    msg = f"stream {k} msg {j} ".encode() + _pattern(k + j, 512)
                    q.put(msg)
                    check(next(call) == msg, f"echo {j} mismatch")
                q.put(None)
                check(not list(call), "extra messages")
                check(call.code() == grpc.StatusCode.OK, f"status {call.code()}")
            except threading.BrokenBarrierError:
                note(f"bidi {k}: not all {n} streams were open within {self.t}s")
            except (grpc.RpcError, ScenarioFailed, StopIteration) as e:
                note(f"bidi {k}: {_rpc_err(e) if isinstance(e, grpc.RpcError) else e!r}")
                barrier.abort()
            finally:
                q.put(None)
                call.cancel()

        threads = [threading.Thread(target=bidi_worker, args=(k,), daemon=True) for k in range(n)]
        for th in threads:
            th.start()
        try:
            barrier.wait(timeout=self.t)
        except threading.BrokenBarrierError:
            pass
        # With the n bidi streams held open, fire n unary calls at once on the same channel.
        unary_futs = []
        for k in range(n):
            payload = f"unary {k} ".encode() + _pattern(k, 2048)
            unary_futs.append((payload, self.unary.future(payload, timeout=self.t)))
        for payload, fut in unary_futs:
            try:
                resp = fut.result(timeout=self.t + 1)
                if resp != payload:
                    note("unary echo mismatch")
                note(peer=_md(fut.initial_metadata()).get("x-portico-peer"))
            except grpc.RpcError as e:
                note(f"unary: {_rpc_err(e)}")
            except grpc.FutureTimeoutError:
                note("unary: no result in time")
        deadline = time.monotonic() + self.t + 2
        for th in threads:
            th.join(timeout=max(0.0, deadline - time.monotonic()))
        alive = sum(th.is_alive() for th in threads)
        if alive:
            errors.append(f"{alive} bidi workers still running")
        if errors:
            raise ScenarioFailed(f"{len(errors)} errors, first: {errors[0]}")
        return (f"{n} bidi streams open at once + {n} unary calls on one channel; "
                f"server saw {len(peers)} distinct upstream connection(s)")

    SCENARIOS = [
        ("connect", s_connect),
        ("unary_small", s_unary_small),
        ("unary_empty", s_unary_empty),
        ("unary_1mib", s_unary_1mib),
        ("server_stream", s_server_stream),
        ("server_stream_error", s_server_stream_error),
        ("client_stream", s_client_stream),
        ("bidi_pingpong", s_bidi_pingpong),
        ("error_status", s_error_status),
        ("deadline_exceeded", s_deadline_exceeded),
        ("cancel_propagation", s_cancel_propagation),
        ("concurrent", s_concurrent),
    ]


def run_client(args) -> int:
    if args.list:
        for name, fn in Client.SCENARIOS:
            print(f"{name:22} {(fn.__doc__ or '').strip().splitlines()[0] if fn.__doc__ else ''}")
        return 0
    client = Client(args)
    passed = failed = 0
    try:
        for name, fn in Client.SCENARIOS:
            if args.only and not any(s in name for s in args.only):
                continue
            t0 = time.monotonic()
            try:
                detail = fn(client)
                ok = True
            except ScenarioFailed as e:
                ok, detail = False, str(e)
            except grpc.RpcError as e:
                ok, detail = False, f"unexpected RPC error {_rpc_err(e)}"
            except Exception as e:  # noqa: BLE001 - report, do not crash the run
                ok, detail = False, f"unexpected {type(e).__name__}: {e}"
            dt = time.monotonic() - t0
            print(f"{'PASS' if ok else 'FAIL'} {name} ({dt:.2f}s) {detail}", flush=True)
            passed += ok
            failed += not ok
            if name == "connect" and not ok:
                break  # nothing else can work
    finally:
        client.close()
    print(f"grpc: {passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 and passed > 0 else 1


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)

    s = sub.add_parser("server", help="run the echo server")
    s.add_argument("--host", default="127.0.0.1")
    s.add_argument("--port", type=int, default=0, help="0: the kernel picks (printed as LISTENING <port>)")
    s.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"), help="serve TLS (h2 via ALPN) with this PEM pair")
    s.add_argument("--workers", type=int, default=1024,
                   help="max handler threads, created on demand (must exceed client --concurrency)")
    s.add_argument("--ignore-stdin", action="store_true", help="do not stop at stdin EOF (SIGTERM only)")

    c = sub.add_parser("client", help="run the scenarios against a server or a proxy in front of one")
    c.add_argument("--target", help="HOST:PORT")
    c.add_argument("--tls", action="store_true", help="use TLS (ALPN h2)")
    c.add_argument("--ca", help="PEM file of trusted roots (default: the system's)")
    c.add_argument("--authority", help=":authority to send (with --tls also the name the certificate must match)")
    c.add_argument("--concurrency", type=int, default=50, help="streams per kind in the concurrent scenario")
    c.add_argument("--call-timeout", type=float, default=10.0, help="deadline of every call, seconds")
    c.add_argument("--cancel-wait", type=float, default=3.0,
                   help="how long the server may take to see a cancellation, seconds")
    c.add_argument("--only", action="append", help="run scenarios whose name contains this (repeatable)")
    c.add_argument("--list", action="store_true", help="list the scenarios")

    args = ap.parse_args(argv)
    if args.cmd == "server":
        return run_server(args)
    if not args.list and not args.target:
        ap.error("client: --target is required")
    if args.ca and not args.tls:
        ap.error("client: --ca needs --tls")
    return run_client(args)


if __name__ == "__main__":
    sys.exit(main())
