#!/usr/bin/env python3
"""Black-box HTTP/1.1 conformance suite for reverse proxies (smuggling, framing, limits, faults).

The suite talks to a proxy over raw TCP sockets and runs its own scripted origin behind it, so
every case can check both what the client got back and what the origin received. Python 3
standard library only.

  blackbox.py --proxy-bin build/examples/reverse_proxy        # start portico's example proxy
  blackbox.py --proxy 127.0.0.1:8080 --origin-port 9000       # a proxy already running, which
                                                             # forwards to 127.0.0.1:9000
  blackbox.py --table portico=a.json nginx=b.json ...         # print a comparison table

Options: --json FILE (machine-readable results), --only SUBSTR (run a subset), -v (show the
bytes of every case, not only of failures), --list.

Each case yields one or two verdicts:
  rfc     what RFC 9112 / RFC 9110 require of a proxy, or plain safety (no request smuggling, no
          truncated response passed off as complete, no leaked upstream connection). Where the
          RFC allows several behaviours, each of them passes.
  policy  portico's documented, stricter choices (docs/http1.md): exact status codes, its default
          limits (64 KiB header section, 128 fields, 8 KiB request-target), rejecting what the RFC
          would also let a recipient repair. Other proxies are not expected to share them.
See README.md next to this file for the list of groups and the exact rules.
"""

import argparse
import gzip
import json
import os
import re
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import traceback

SMUGGLED = b"GET /SMUGGLED HTTP/1.1\r\nHost: h\r\n\r\n"
MARKER = b"SMUGGLED"

# Timeouts the proxies are configured with (run_compare.sh sets the same values for nginx and
# HAProxy); the suite's own waits are derived from them.
PROXY_TIMEOUT_S = 1.0
DEFAULT_PROXY_ARGS = [
    "--connect-timeout-ms", "1000",
    "--upstream-read-timeout-ms", "1000",
    "--upstream-write-timeout-ms", "1000",
    "--header-read-timeout-ms", "1000",
    "--body-read-timeout-ms", "1000",
]

READ_TIMEOUT = 3.0      # waiting for a response that should come
CLOSE_WAIT = 2.0        # waiting for the proxy to close a connection it must close
IO_TIMEOUT = 5.0        # any single socket operation
MAX_CASE_SECONDS = 12.0  # hard bound on the bookkeeping of one case

TOKEN_RE = re.compile(rb"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
DIGITS_RE = re.compile(rb"^[0-9]+$")
HEX_RE = re.compile(rb"^[0-9A-Fa-f]+$")


def show(b, limit=700):
    """Bytes as a readable one-line string: CR, LF, NUL etc. escaped, long runs shortened."""
    if b is None:
        return "None"
    b = bytes(b)
    # Collapse long runs of one byte (the limit cases send kilobytes of 'a').
    out = []
    i = 0
    while i < len(b):
        j = i
        while j < len(b) and b[j] == b[i]:
            j += 1
        run = j - i
        chunk = bytes([b[i]])
        text = chunk.decode("latin-1")
        if text == "\r":
            text = "\\r"
        elif text == "\n":
            text = "\\n"
        elif text == "\t":
            text = "\\t"
        elif text == "\\":
            text = "\\\\"
        elif not (0x20 <= b[i] < 0x7F):
            text = "\\x%02x" % b[i]
        if run > 8:
            out.append("%s{x%d}" % (text, run))
        else:
            out.append(text * run)
        i = j
    s = "".join(out)
    if len(s) > limit:
        cut = max(limit - 24, limit // 2)
        s = s[:cut] + "...(%d more chars)" % (len(s) - cut)
    return s


# ---------------------------------------------------------------------------------------------
# Lenient HTTP/1 parsing, used to observe traffic on both sides. It records every irregularity
# it sees instead of failing, so that the checks can decide what is acceptable.
# ---------------------------------------------------------------------------------------------


class Msg:
    def __init__(self):
        self.kind = ""            # "request" or "response"
        self.start = b""
        self.method = b""
        self.target = b""
        self.version = b""
        self.status = None
        self.headers = []         # [(name bytes, value bytes)] in order, as received
        self.trailers = []
        self.body = b""
        self.framing = ""         # "none", "cl", "chunked", "close"
        self.complete = False
        self.error = None         # why the parse of this message stopped, if it did
        self.anomalies = set()
        self.interim = []         # 1xx responses received before this final response
        self.head_raw = b""

    def all(self, name):
        n = name.lower().encode() if isinstance(name, str) else name.lower()
        return [v for k, v in self.headers if k.lower() == n]

    def get(self, name):
        v = self.all(name)
        return v[0] if v else None

    def has(self, name):
        return bool(self.all(name))

    def te_codings(self):
        vals = self.all("transfer-encoding")
        if not vals:
            return None
        return [c.strip(b" \t").lower() for c in b",".join(vals).split(b",") if c.strip(b" \t")]

    def __repr__(self):
        if self.kind == "request":
            return "<%s %s %s body=%d%s>" % (self.method.decode("latin-1"),
                                             show(self.target, 60), self.version.decode("latin-1"),
                                             len(self.body), "" if self.complete else " incomplete")
        return "<%s body=%d%s>" % (self.status, len(self.body), "" if self.complete else " incomplete")


def _read_lines(buf, pos, msg, max_lines=100000):
    """Lines up to and including the first empty one. Returns (lines, pos) or None if the
    buffer ends first. Bare LF endings and bare CRs are noted in msg.anomalies."""
    lines = []
    while len(lines) < max_lines:
        nl = buf.find(b"\n", pos)
        if nl < 0:
            return None
        line = buf[pos:nl]
        if line.endswith(b"\r"):
            line = line[:-1]
        else:
            msg.anomalies.add("bare-lf")
        if b"\r" in line:
            msg.anomalies.add("bare-cr")
        pos = nl + 1
        if line == b"":
            return lines, pos
        lines.append(line)
    return None


def _parse_fields(lines, msg, into):
    for line in lines:
        if line[:1] in (b" ", b"\t"):
            msg.anomalies.add("obs-fold")
            if into:
                k, v = into[-1]
                into[-1] = (k, v + b" " + line.strip(b" \t"))
            continue
        if b":" not in line:
            msg.anomalies.add("field-without-colon")
            continue
        name, value = line.split(b":", 1)
        if not TOKEN_RE.match(name):
            msg.anomalies.add("bad-field-name")
        value = value.strip(b" \t")
        if any((c < 0x20 and c != 0x09) or c == 0x7F for c in value):
            msg.anomalies.add("ctl-in-value")
        into.append((name, value))


def _parse_chunked(buf, pos, msg):
    """Returns (pos, state) with state "complete", "incomplete" or "error"."""
    body = bytearray()
    while True:
        nl = buf.find(b"\n", pos)
        if nl < 0:
            msg.body = bytes(body)
            return pos, "incomplete"
        line = buf[pos:nl]
        if line.endswith(b"\r"):
            line = line[:-1]
        else:
            msg.anomalies.add("bare-lf")
        if b"\r" in line:
            msg.anomalies.add("bare-cr")
        size = line.split(b";", 1)[0].rstrip(b" \t")
        if not HEX_RE.match(size) or len(size) > 15:
            msg.body = bytes(body)
            msg.error = "bad chunk-size line %s" % show(line, 60)
            return pos, "error"
        n = int(size, 16)
        pos = nl + 1
        if n == 0:
            r = _read_lines(buf, pos, msg)
            if r is None:
                msg.body = bytes(body)
                return pos, "incomplete"
            lines, pos = r
            _parse_fields(lines, msg, msg.trailers)
            msg.body = bytes(body)
            return pos, "complete"
        if len(buf) < pos + n:
            body += buf[pos:]
            msg.body = bytes(body)
            return len(buf), "incomplete"
        body += buf[pos:pos + n]
        pos += n
        if buf[pos:pos + 2] == b"\r\n":
            pos += 2
        elif buf[pos:pos + 1] == b"\n":
            msg.anomalies.add("bare-lf")
            pos += 1
        elif len(buf) - pos < 2:
            msg.body = bytes(body)
            return pos, "incomplete"
        else:
            msg.body = bytes(body)
            msg.error = "chunk data not followed by CRLF"
            return pos, "error"


def parse_message(buf, pos, kind, method=b"GET", eof=False):
    """Parses one message at buf[pos:]. Returns (msg, newpos) or (None, pos) when the head is not
    complete yet."""
    msg = Msg()
    msg.kind = kind
    # RFC 9112 §2.2: a server SHOULD ignore at least one empty line before a request-line.
    start = pos
    while kind == "request" and buf[pos:pos + 2] == b"\r\n":
        pos += 2
    r = _read_lines(buf, pos, msg)
    if r is None:
        return None, start
    lines, end = r
    msg.head_raw = buf[pos:end]
    if not lines:
        msg.error = "empty head"
        return msg, end
    msg.start = lines[0]
    _parse_fields(lines[1:], msg, msg.headers)
    pos = end
    if kind == "request":
        parts = msg.start.split(b" ")
        if len(parts) == 3:
            msg.method, msg.target, msg.version = parts
        else:
            msg.anomalies.add("bad-request-line")
            msg.method = parts[0]
            msg.target = parts[1] if len(parts) > 1 else b""
            msg.version = parts[-1] if len(parts) > 2 else b""
        if msg.version not in (b"HTTP/1.0", b"HTTP/1.1"):
            msg.anomalies.add("bad-version")
    else:
        m = re.match(rb"^(HTTP/\d\.\d) (\d{3})(?: (.*))?$", msg.start)
        if not m:
            msg.error = "bad status line %s" % show(msg.start, 80)
            msg.anomalies.add("bad-status-line")
            return msg, pos
        msg.version = m.group(1)
        msg.status = int(m.group(2))
    te = msg.te_codings()
    cls = msg.all("content-length")
    if te is not None and cls:
        msg.anomalies.add("cl+te")
    if len(cls) > 1:
        msg.anomalies.add("multiple-cl")
    cl_values = set(v.strip(b" \t") for v in b",".join(cls).split(b",")) if cls else set()
    if cls and (len(cl_values) != 1 or not all(DIGITS_RE.match(v) for v in cl_values)):
        msg.anomalies.add("invalid-cl")
    if te is not None and te != [b"chunked"]:
        msg.anomalies.add("te-not-plain-chunked")
    # Framing (RFC 9112 §6.3).
    if kind == "response" and (method == b"HEAD" or msg.status < 200 or msg.status in (204, 304)):
        msg.framing = "none"
    elif kind == "response" and msg.status == 101:
        msg.framing = "none"
    elif te is not None:
        if te and te[-1] == b"chunked":
            msg.framing = "chunked"
        elif kind == "response":
            msg.framing = "close"
        else:
            msg.error = "request Transfer-Encoding without final chunked"
            return msg, pos
    elif cls:
        if "invalid-cl" in msg.anomalies:
            msg.error = "invalid Content-Length"
            return msg, pos
        msg.framing = "cl"
    elif kind == "response":
        msg.framing = "close"
    else:
        msg.framing = "none"
    if msg.framing == "none":
        msg.complete = True
        return msg, pos
    if msg.framing == "cl":
        n = int(cl_values.pop())
        msg.body = buf[pos:pos + n]
        if len(buf) - pos >= n:
            msg.complete = True
        return msg, min(len(buf), pos + n)
    if msg.framing == "close":
        msg.body = buf[pos:]
        msg.complete = eof
        return msg, len(buf)
    newpos, state = _parse_chunked(buf, pos, msg)
    msg.complete = state == "complete"
    return msg, newpos


def parse_stream(buf, kind, methods=None, eof=False):
    """All messages in buf. Returns (messages, leftover bytes). For responses, 1xx interim
    responses are attached to the following final response; after a 101 parsing stops and
    the rest is tunnel data."""
    buf = bytes(buf)
    msgs = []
    interim = []
    pos = 0
    i = 0
    while pos < len(buf) and len(msgs) < 1000:
        method = (methods[i] if methods and i < len(methods) else b"GET")
        m, newpos = parse_message(buf, pos, kind, method, eof)
        if m is None:
            break
        if kind == "response" and m.status is not None and 100 <= m.status < 200 and m.status != 101:
            interim.append(m)
            pos = newpos
            continue
        m.interim = interim
        interim = []
        msgs.append(m)
        pos = newpos
        i += 1
        if m.error or not m.complete:
            break
        if kind == "response" and m.status == 101:
            break
    return msgs, buf[pos:]


# ---------------------------------------------------------------------------------------------
# The scripted origin.
# ---------------------------------------------------------------------------------------------


class CaseState:
    """What the origin knows about the case in progress."""

    def __init__(self, name, script):
        self.name = name
        self.script = script
        self.abort_r, self.abort_w = os.pipe()
        self.conns = []


class OriginConn:
    def __init__(self, origin, sock, case):
        self.origin = origin
        self.sock = sock
        self.case = case
        self.data = bytearray()
        self.accepted_at = time.monotonic()
        self.eof_at = None        # when the proxy closed (or reset) its side
        self.reset = False
        self.closed_by_origin = False
        self.done = False
        self.sent = bytearray()
        self.note = ""

    # --- reading -------------------------------------------------------------------------
    def _wait_readable(self, deadline):
        """True when the socket is readable; False on timeout or case abort."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            try:
                r, _, _ = select.select([self.sock, self.case.abort_r], [], [], left)
            except (OSError, ValueError):
                return False
            if self.sock in r:
                return True
            if self.case.abort_r in r:
                return False

    def recv_some(self, deadline):
        """Reads once. Returns False when nothing more can come (EOF, error, timeout, abort)."""
        if self.eof_at is not None or self.closed_by_origin:
            return False
        if not self._wait_readable(deadline):
            return False
        try:
            b = self.sock.recv(65536)
        except ConnectionResetError:
            self.reset = True
            b = b""
        except OSError:
            b = b""
        with self.origin.cv:
            if b:
                self.data += b
            else:
                self.eof_at = time.monotonic()
            self.origin.cv.notify_all()
        return bool(b)

    def read_until(self, pred, timeout=IO_TIMEOUT):
        deadline = time.monotonic() + timeout
        while not pred(bytes(self.data)):
            if not self.recv_some(deadline):
                return pred(bytes(self.data))
        return True

    def requests(self):
        msgs, _ = parse_stream(self.data, "request", eof=self.eof_at is not None)
        return msgs

    def read_request(self, index=0, timeout=IO_TIMEOUT):
        """Waits for the index-th complete request; None when it does not come."""
        def have(data):
            msgs, _ = parse_stream(data, "request")
            if len(msgs) > index and (msgs[index].complete or msgs[index].error):
                return True
            # Expect: 100-continue: answer 100 once the head is there (RFC 9110 §10.1.1).
            if len(msgs) > index and not self.note and msgs[index].get("expect") is not None \
                    and msgs[index].get("expect").lower() == b"100-continue":
                self.note = "sent-100"
                self.send(b"HTTP/1.1 100 Continue\r\n\r\n")
            return False
        if not self.read_until(have, timeout):
            return None
        msgs, _ = parse_stream(self.data, "request")
        m = msgs[index]
        return m if m.complete else None

    def read_head(self, timeout=IO_TIMEOUT):
        return self.read_until(lambda d: b"\r\n\r\n" in d or b"\n\n" in d, timeout)

    def wait_eof(self, timeout):
        deadline = time.monotonic() + timeout
        while self.eof_at is None:
            if not self.recv_some(deadline):
                if self.eof_at is None and (time.monotonic() >= deadline or self.aborted()):
                    return False
        return True

    def aborted(self):
        r, _, _ = select.select([self.case.abort_r], [], [], 0)
        return bool(r)

    # --- writing -------------------------------------------------------------------------
    def send(self, b):
        try:
            self.sock.settimeout(IO_TIMEOUT)
            self.sock.sendall(b)
            self.sent += b
            return True
        except OSError:
            return False

    def shutdown_write(self):
        try:
            self.sock.shutdown(socket.SHUT_WR)
        except OSError:
            pass

    def close(self):
        self.closed_by_origin = True
        try:
            self.sock.close()
        except OSError:
            pass


def origin_response(req, status=b"200 OK", extra=b"", body=None):
    if body is None:
        body = b"origin:" + req.method + b" " + req.target
    head = b"HTTP/1.1 " + status + b"\r\nContent-Type: text/plain\r\nContent-Length: " + \
        str(len(body)).encode() + b"\r\nConnection: close\r\n" + extra + b"\r\n"
    return head + (b"" if req.method == b"HEAD" else body)


def serve_normal(conn):
    """One request, one 200 response whose body names the request; then the origin closes
    (Connection: close, so no proxy reuses the upstream connection)."""
    req = conn.read_request(0)
    if req is None:
        return
    conn.send(origin_response(req))


def serve_raw(raw_for):
    """Reads one request, sends raw bytes (a callable of the request, or bytes), then closes."""
    def script(conn):
        req = conn.read_request(0)
        if req is None:
            return
        conn.send(raw_for(req) if callable(raw_for) else raw_for)
    return script


def serve_stall(seconds):
    """Reads the request and never answers; records when the proxy gives up on the connection."""
    def script(conn):
        conn.read_request(0)
        conn.wait_eof(seconds)
    return script


def serve_close_at_once(conn):
    conn.read_request(0)


class Origin:
    def __init__(self, port=0):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(128)
        self.port = self.lsock.getsockname()[1]
        self.cv = threading.Condition()
        self.case = CaseState("(between cases)", serve_normal)
        self.all_cases = [self.case]
        self.stop_r, self.stop_w = os.pipe()
        self.threads = []
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    def _accept_loop(self):
        while True:
            r, _, _ = select.select([self.lsock, self.stop_r], [], [])
            if self.stop_r in r:
                return
            try:
                s, _ = self.lsock.accept()
            except OSError:
                continue
            with self.cv:
                case = self.case
                conn = OriginConn(self, s, case)
                case.conns.append(conn)
                self.cv.notify_all()
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self.threads.append(t)
            t.start()

    def _serve(self, conn):
        try:
            conn.case.script(conn)
        except Exception:  # a bug in a script must not hang the suite
            conn.note = "origin script error: " + traceback.format_exc(limit=3)
        if not conn.closed_by_origin:
            # Let the proxy finish reading, then record everything else it sends until it closes.
            conn.shutdown_write()
            conn.wait_eof(MAX_CASE_SECONDS)
            conn.close()
        with self.cv:
            conn.done = True
            self.cv.notify_all()

    def begin(self, name, script):
        # A connection the proxy made for the previous case may still wait in the accept queue
        # (a loaded machine delays the accept thread): let it be accepted first, so it is not
        # counted as this case's. Bounded; the accept thread notifies after every accept.
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:
            pending, _, _ = select.select([self.lsock], [], [], 0)
            if not pending:
                break
            with self.cv:
                self.cv.wait(0.01)
        with self.cv:
            self.case = CaseState(name, script)
            self.all_cases.append(self.case)
        return self.case

    def end(self, case):
        """Ends a case: wakes every script still waiting, waits (bounded) for them."""
        try:
            os.close(case.abort_w)
        except OSError:
            pass
        deadline = time.monotonic() + 3.0
        with self.cv:
            self.case = CaseState("(between cases)", serve_normal)
            self.all_cases.append(self.case)
            while not all(c.done for c in case.conns):
                left = deadline - time.monotonic()
                if left <= 0:
                    break
                self.cv.wait(left)
        for c in case.conns:
            if not c.done:
                c.close()
        if all(c.done for c in case.conns):
            try:
                os.close(case.abort_r)
            except OSError:
                pass

    def wait(self, pred, timeout):
        deadline = time.monotonic() + timeout
        with self.cv:
            while not pred():
                left = deadline - time.monotonic()
                if left <= 0:
                    return pred()
                self.cv.wait(left)
            return True

    def stop(self):
        os.write(self.stop_w, b"x")
        self.thread.join(2)
        self.lsock.close()


# ---------------------------------------------------------------------------------------------
# The client side.
# ---------------------------------------------------------------------------------------------


class Client:
    def __init__(self, addr):
        self.sock = socket.create_connection(addr, timeout=IO_TIMEOUT)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.raw = bytearray()
        self.eof = False
        self.reset = False
        self.send_error = None
        self.sent = bytearray()

    def send(self, b):
        self.sent += b
        try:
            self.sock.settimeout(IO_TIMEOUT)
            self.sock.sendall(b)
        except OSError as e:  # the proxy may close before it read everything (e.g. a 431)
            self.send_error = e.__class__.__name__

    def recv_some(self, deadline):
        if self.eof:
            return False
        left = deadline - time.monotonic()
        if left <= 0:
            return False
        r, _, _ = select.select([self.sock], [], [], left)
        if not r:
            return False
        try:
            b = self.sock.recv(262144)
        except ConnectionResetError:
            self.reset = True
            b = b""
        except OSError:
            b = b""
        if not b:
            self.eof = True
            return False
        self.raw += b
        return True

    def read_until(self, pred, timeout=READ_TIMEOUT):
        deadline = time.monotonic() + timeout
        while not pred(bytes(self.raw)):
            if not self.recv_some(deadline):
                return pred(bytes(self.raw))
        return True

    def responses(self, methods=None):
        msgs, left = parse_stream(self.raw, "response", methods, self.eof)
        return msgs, left

    def read_responses(self, n, methods=None, timeout=READ_TIMEOUT):
        def enough(_):
            msgs, _ = parse_stream(self.raw, "response", methods, self.eof)
            done = [m for m in msgs if m.complete]
            return len(done) >= n or any(m.error for m in msgs) or \
                any(m.status == 101 for m in msgs)
        self.read_until(enough, timeout)
        return self.responses(methods)[0]

    def wait_close(self, timeout=CLOSE_WAIT):
        deadline = time.monotonic() + timeout
        while not self.eof:
            if not self.recv_some(deadline) and not self.eof:
                return False
        return True

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


# ---------------------------------------------------------------------------------------------
# An exchange: what one case sent and observed, plus the checks every case shares.
# ---------------------------------------------------------------------------------------------


class Exchange:
    def __init__(self, ctx, sent, methods):
        self.ctx = ctx
        self.sent = sent
        self.methods = methods
        self.client = None
        self.responses = []
        self.leftover = b""
        self.closed = None      # True: the proxy closed; False: still open after CLOSE_WAIT
        self.t_sent = 0.0
        self.t_first_byte = None
        self.conns = []
        self.notes = []
        self.versions = []      # HTTP version of each request sent, when not HTTP/1.1

    # --- client side ---------------------------------------------------------------------
    def refresh(self):
        self.responses, self.leftover = self.client.responses(self.methods)

    @property
    def raw(self):
        return bytes(self.client.raw) if self.client else b""

    def first(self):
        return self.responses[0] if self.responses else None

    def final_statuses(self):
        return [r.status for r in self.responses]

    # --- origin side ---------------------------------------------------------------------
    def origin_bytes(self):
        return b"".join(bytes(c.data) for c in self.conns)

    def origin_requests(self):
        out = []
        for c in self.conns:
            out.extend(c.requests())
        return out

    def origin_complete(self):
        return [m for m in self.origin_requests() if m.complete and not m.error]

    def generic_failures(self):
        """Checks that hold in every case, whatever the proxy chose to do."""
        fails = []
        for m in self.origin_requests():
            if MARKER in m.target or MARKER in m.start:
                fails.append("SMUGGLED request reached the origin: %s" % show(m.start, 80))
            bad = m.anomalies & {"cl+te", "multiple-cl", "invalid-cl", "bare-lf", "bare-cr",
                                 "obs-fold", "ctl-in-value", "bad-field-name",
                                 "field-without-colon", "bad-request-line", "bad-version"}
            if bad:
                fails.append("origin received an invalid request (%s): %s" %
                             (", ".join(sorted(bad)), show(m.head_raw, 160)))
            te = m.te_codings()
            if te is not None and (not te or te[-1] != b"chunked"):
                fails.append("origin received a request Transfer-Encoding without final chunked")
        for i, r in enumerate(self.responses):
            if "cl+te" in r.anomalies:
                fails.append("client received a response with both Content-Length and "
                             "Transfer-Encoding")
            if r.error and not (r.status == 101):
                fails.append("client received an unparseable response: %s" % r.error)
            req_v = self.versions[i] if i < len(self.versions) else b"HTTP/1.1"
            if req_v == b"HTTP/1.0" and r.has("transfer-encoding"):
                fails.append("Transfer-Encoding sent to an HTTP/1.0 client (RFC 9112 §6.1)")
        return fails

    def describe(self):
        lines = ["sent:        " + show(self.sent)]
        lines.append("received:    " + show(self.raw) +
                     ("  [closed]" if self.closed or (self.client and self.client.eof) else
                      "  [open]" if self.closed is False else ""))
        for i, c in enumerate(self.conns):
            lines.append("origin #%d got: %s%s" % (
                i, show(c.data), "  [proxy closed it]" if c.eof_at else ""))
            if c.sent:
                lines.append("origin #%d sent: %s" % (i, show(c.sent, 300)))
        if not self.conns:
            lines.append("origin got:  nothing")
        lines.extend(self.notes)
        return lines


class Ctx:
    """What cases use: the proxy's address and the origin."""

    def __init__(self, proxy_addr, origin, name):
        self.proxy_addr = proxy_addr
        self.origin = origin
        self.name = name
        self.case = None

    def connect(self):
        return Client(self.proxy_addr)

    def exchange(self, send, script=serve_normal, n=1, methods=None, close=False,
                 read_timeout=READ_TIMEOUT, versions=None):
        """Sends `send` on a new connection and reads n final responses (or until the proxy closes
        or READ_TIMEOUT). With close=True, then waits up to CLOSE_WAIT for the proxy to close."""
        self.case.script = script
        x = Exchange(self, send, [m.encode() if isinstance(m, str) else m for m in (methods or [])])
        x.versions = versions or []
        x.client = self.connect()
        x.t_sent = time.monotonic()
        x.client.send(send)
        x.client.read_responses(n, x.methods, read_timeout)
        if close:
            x.closed = x.client.wait_close(CLOSE_WAIT)
        elif x.client.eof:
            x.closed = True
        x.refresh()
        self.settle(x)
        return x

    def settle(self, x, timeout=1.0):
        """Lets the origin side finish: waits (bounded) until every origin connection of the case
        was closed by the proxy, then records them in x."""
        case = self.case
        self.origin.wait(lambda: all(c.eof_at is not None or c.closed_by_origin for c in case.conns),
                         timeout)
        x.conns = list(case.conns)


# ---------------------------------------------------------------------------------------------
# Cases.
# ---------------------------------------------------------------------------------------------


class Case:
    def __init__(self, name, group, fn, doc):
        self.name = name
        self.group = group
        self.fn = fn
        self.doc = doc


CASES = []


def case(group):
    def deco(fn):
        name = fn.__name__
        CASES.append(Case(name, group, fn, (fn.__doc__ or "").strip()))
        return fn
    return deco


class Verdicts:
    """A case's result: an rfc verdict and/or a policy verdict, each (ok, reason)."""

    def __init__(self, x=None, rfc=None, policy=None):
        self.x = x
        self.rfc = rfc
        self.policy = policy


def ok(reason="ok"):
    return (True, reason)


def fail(reason):
    return (False, reason)


def first_fail(*checks):
    """The first failing (ok, reason) among checks, else the last passing one."""
    last = ok()
    for c in checks:
        if c is None:
            continue
        if not c[0]:
            return c
        last = c
    return last


def any_of(*checks):
    """Passes if one of the alternatives passes; otherwise lists why each failed."""
    reasons = []
    for c in checks:
        if c[0]:
            return c
        reasons.append(c[1])
    return fail(" / ".join(reasons))


def with_generic(x, check):
    g = x.generic_failures()
    if g:
        return fail(g[0])
    return check


# --- building blocks of checks ----------------------------------------------------------------


def c_status(x, statuses):
    r = x.first()
    if r is None and x.raw:
        return fail("no HTTP/1.x response; got %s" % show(x.raw, 80))
    if r is None:
        return fail("no response (connection %s)" % ("closed" if x.client.eof else "open, timed out"))
    if r.status not in statuses:
        parts = r.start.split(b" ")
        got = parts[1].decode("latin-1") if len(parts) > 1 else str(r.status)
        return fail("got %s, want %s" % (got, "/".join(map(str, statuses))))
    return ok(str(r.status))


def c_closed(x, why="the connection must be closed"):
    if x.closed is None:
        x.closed = x.client.wait_close(CLOSE_WAIT)
        x.refresh()
    if not x.closed:
        return fail(why + " (still open after %.1fs)" % CLOSE_WAIT)
    return ok("closed")


def c_origin_nothing(x):
    data = x.origin_bytes()
    if data:
        return fail("origin received %d bytes: %s" % (len(data), show(data, 120)))
    return ok("origin got nothing")


def c_origin_no_complete(x):
    done = x.origin_complete()
    if done:
        return fail("origin received a complete request: %r" % done[0])
    return ok("origin got no complete request")


def c_no_second_response(x):
    if len(x.responses) > 1:
        return fail("client got %d responses for one request: statuses %s" %
                    (len(x.responses), x.final_statuses()))
    return ok()


def reject(x, statuses=(400,), close=True, origin="none"):
    """Refused with one of `statuses`; closed if `close`; the origin got nothing ("none") or at
    least no complete request ("incomplete")."""
    return first_fail(
        c_status(x, statuses),
        c_closed(x, "connection not closed after refusing the request") if close else None,
        c_origin_nothing(x) if origin == "none" else c_origin_no_complete(x),
        c_no_second_response(x),
        ok("%s%s, origin got %s" % (x.first().status if x.first() else "-",
                                    ", closed" if close else "",
                                    "nothing" if origin == "none" else "no complete request")),
    )


def reject_body(x, status=None):
    """An invalid request body: the head may already have been forwarded (bodies stream), but
    the origin never gets a complete request and the client connection closes. Any response
    must be an error; with `status`, it must be exactly that."""
    r = x.first()
    checks = []
    if status is not None:
        checks.append(c_status(x, (status,)))
    elif r is not None and r.status < 400:
        checks.append(fail("got %s for an invalid body" % r.status))
    checks += [c_closed(x, "connection not closed after an invalid body"),
               c_origin_no_complete(x), c_no_second_response(x),
               ok("%s, closed, origin got no complete request" % (r.status if r else "no response"))]
    return first_fail(*checks)


def processed(x, body, close=False, target=None, n_origin=1):
    """Forwarded as one well-framed request whose body is `body`, answered 200."""
    reqs = x.origin_complete()
    checks = []
    if len(reqs) != n_origin:
        checks.append(fail("origin got %d complete requests, want %d" % (len(reqs), n_origin)))
    elif reqs[0].body != body:
        checks.append(fail("origin got body %s, want %s" % (show(reqs[0].body, 80), show(body, 80))))
    elif target is not None and reqs[0].target != target:
        checks.append(fail("origin got target %s" % show(reqs[0].target, 80)))
    checks.append(c_status(x, (200,)))
    if close:
        checks.append(c_closed(x, "connection not closed after an ambiguous request (RFC 9112 §6.1)"))
    checks.append(ok("processed: origin got body %s%s" % (show(body, 40), ", closed" if close else "")))
    return first_fail(*checks)


def ambiguous(x, chunked_body, statuses=(400, 501)):
    """Content-Length with Transfer-Encoding: chunked (RFC 9112 §6.1, §6.3): refused and closed,
    or processed as chunked with Content-Length removed and the connection closed after."""
    return any_of(reject(x, statuses, close=True, origin="incomplete"),
                  processed(x, chunked_body, close=True))


def req(method="GET", target="/", fields=b"", body=b"", version=b"HTTP/1.1", host=b"h"):
    head = method.encode() + b" " + (target.encode() if isinstance(target, str) else target) + \
        b" " + version + b"\r\n"
    if host is not None:
        head += b"Host: " + host + b"\r\n"
    return head + fields + b"\r\n" + body


def post(fields, body, target="/p"):
    return req("POST", target, fields, body)


# ===================================== smuggling ================================================

CL_TE_BODY = b"0\r\n\r\n" + SMUGGLED
TE_CL_CHUNK = b"%x\r\n" % len(SMUGGLED) + SMUGGLED + b"\r\n0\r\n\r\n"


def cl_te_case(ctx, te_line):
    """CL.TE with an (obfuscated) Transfer-Encoding line; a request is pipelined behind the
    chunked end, so a proxy that keeps the connection open would forward it."""
    return ctx.exchange(post(b"Content-Length: %d\r\n" % len(CL_TE_BODY) + te_line + b"\r\n",
                             CL_TE_BODY), close=True)


@case("smuggling")
def cl_te(ctx):
    """Content-Length and Transfer-Encoding: chunked; the chunked body ends early and a request
    follows. RFC 9112 §6.1: refuse, or process as chunked and close. Policy: 400."""
    x = cl_te_case(ctx, b"Transfer-Encoding: chunked")
    return Verdicts(x, rfc=with_generic(x, ambiguous(x, b"")),
                    policy=with_generic(x, reject(x, (400,))))


@case("smuggling")
def te_cl(ctx):
    """Transfer-Encoding: chunked first, then a short Content-Length; the chunk data is a request.
    RFC: refuse, or process as chunked (the request is body data) and close. Policy: 400."""
    x = ctx.exchange(post(b"Transfer-Encoding: chunked\r\nContent-Length: 3\r\n", TE_CL_CHUNK),
                     close=True)
    return Verdicts(x, rfc=with_generic(x, ambiguous(x, SMUGGLED)),
                    policy=with_generic(x, reject(x, (400,))))


def te_obfuscation(name, te_line, chunked_ok, doc):
    def fn(ctx):
        x = cl_te_case(ctx, te_line)
        if chunked_ok:
            rfc = ambiguous(x, b"")
            policy = reject(x, (400,))
        else:
            rfc = reject(x, (400, 501), close=True, origin="incomplete")
            # docs/http1.md: CL with TE is 400, a final coding other than chunked is 501; here
            # both rules apply, so either status is portico's documented answer.
            policy = reject(x, (400, 501))
        return Verdicts(x, rfc=with_generic(x, rfc), policy=with_generic(x, policy))
    fn.__name__ = name
    fn.__doc__ = doc
    return case("smuggling")(fn)


te_obfuscation("cl_te_xchunked", b"Transfer-Encoding: xchunked", False,
               "CL + 'Transfer-Encoding: xchunked': final coding not chunked -> 400/501 and close "
               "(RFC 9112 §6.3). Policy: 400 or 501.")
te_obfuscation("cl_te_leading_space", b"Transfer-Encoding:  chunked", True,
               "CL + TE value with extra leading space (OWS, so it is chunked). Policy: 400.")
te_obfuscation("cl_te_leading_tab", b"Transfer-Encoding:\tchunked", True,
               "CL + TE value after a TAB (OWS, so it is chunked). Policy: 400.")
te_obfuscation("cl_te_vertical_tab", b"Transfer-Encoding:\x0bchunked", False,
               "CL + TE value '\\x0bchunked' (VT is not whitespace in HTTP): not chunked -> "
               "400/501 and close. Policy: 400 or 501.")
te_obfuscation("cl_te_uppercase", b"Transfer-Encoding: CHUNKED", True,
               "CL + 'CHUNKED' (coding names are case-insensitive, so it is chunked). Policy: 400.")
te_obfuscation("cl_te_chunked_identity", b"Transfer-Encoding: chunked, identity", False,
               "CL + 'chunked, identity': chunked not final -> 400/501 and close. Policy: 400 or 501.")
te_obfuscation("cl_te_duplicate_te", b"Transfer-Encoding: chunked\r\nTransfer-Encoding: identity",
               False, "CL + two TE lines 'chunked' and 'identity' (= 'chunked, identity'): "
               "400/501 and close. Policy: 400 or 501.")
te_obfuscation("cl_te_obs_fold", b"Transfer-Encoding:\r\n chunked", True,
               "CL + TE value on an obs-fold continuation line: reject (400) or unfold to "
               "'chunked' and handle as CL+TE. Policy: 400.")


@case("smuggling")
def cl_te_space_before_colon(ctx):
    """CL + 'Transfer-Encoding : chunked'. RFC 9112 §5.1: whitespace before the colon MUST be
    answered 400. Policy: 400 and close."""
    x = cl_te_case(ctx, b"Transfer-Encoding : chunked")
    return Verdicts(x, rfc=with_generic(x, reject(x, (400,), close=False)),
                    policy=with_generic(x, reject(x, (400,), close=True)))


@case("smuggling")
def te_xchunked(ctx):
    """'Transfer-Encoding: xchunked' alone: unknown coding, chunked not final -> 400 or 501 and
    close (RFC 9112 §6.1, §6.3). Policy: 501."""
    x = ctx.exchange(post(b"Transfer-Encoding: xchunked\r\n", b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLED),
                     close=True)
    return Verdicts(x, rfc=with_generic(x, reject(x, (400, 501), origin="incomplete")),
                    policy=with_generic(x, reject(x, (501,))))


@case("smuggling")
def te_chunked_identity(ctx):
    """'Transfer-Encoding: chunked, identity' alone: chunked not final -> 400/501, close.
    Policy: 501."""
    x = ctx.exchange(post(b"Transfer-Encoding: chunked, identity\r\n",
                          b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLED), close=True)
    return Verdicts(x, rfc=with_generic(x, reject(x, (400, 501), origin="incomplete")),
                    policy=with_generic(x, reject(x, (501,))))


@case("smuggling")
def te_identity_chunked(ctx):
    """'Transfer-Encoding: identity, chunked': 'identity' is not a registered coding, so a server
    SHOULD answer 501 (RFC 9112 §6.1); any 4xx or 501 refusal that closes is safe. Or: decoded
    as chunked and forwarded re-framed."""
    x = ctx.exchange(post(b"Transfer-Encoding: identity, chunked\r\n", b"5\r\nhello\r\n0\r\n\r\n"),
                     close=False)
    return Verdicts(x, rfc=with_generic(x, any_of(
        reject(x, tuple(range(400, 500)) + (501,), origin="incomplete"), processed(x, b"hello"))))


@case("smuggling")
def te_http10(ctx):
    """Transfer-Encoding in an HTTP/1.0 request (with keep-alive) and a request pipelined behind:
    RFC 9112 §6.1: the framing is faulty; the connection MUST be closed after it, so the
    pipelined request is never processed."""
    x = ctx.exchange(req("POST", "/p", b"Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n",
                         b"5\r\nhello\r\n0\r\n\r\n" + SMUGGLED, version=b"HTTP/1.0"),
                     close=True, versions=[b"HTTP/1.0"])
    r = x.first()
    return Verdicts(x, rfc=with_generic(x, first_fail(
        ok() if r is not None else fail("no response"),
        c_closed(x, "HTTP/1.0 request with Transfer-Encoding: connection not closed after it"),
        c_no_second_response(x),
        ok("%s, closed" % (r.status if r else "-")))))


def cl_case(name, cl_lines, valid_body=None, doc=""):
    """Invalid Content-Length (RFC 9112 §6.3: 400 and close). With valid_body, the RFC also lets a
    recipient accept it (identical repeated values) and the body must then be exactly that."""
    def fn(ctx):
        # Invalid values: the body covers a request that a proxy reading "5" would forward on
        # its own. Acceptable values: only the 5-byte body (anything behind would be a
        # legitimately pipelined request).
        body = b"hello" + (SMUGGLED if valid_body is None else b"")
        x = ctx.exchange(post(cl_lines, body), close=valid_body is None)
        strict = reject(x, (400,), close=True)
        if valid_body is None:
            rfc = strict
        else:
            rfc = any_of(strict, processed(x, valid_body))
        return Verdicts(x, rfc=with_generic(x, rfc), policy=with_generic(x, strict))
    fn.__name__ = name
    fn.__doc__ = doc
    return case("smuggling")(fn)


cl_case("cl_plus_sign", b"Content-Length: +5\r\n", doc="'Content-Length: +5' -> 400, close.")
cl_case("cl_negative", b"Content-Length: -5\r\n", doc="'Content-Length: -5' -> 400, close.")
cl_case("cl_space_inside", b"Content-Length: 5 5\r\n", doc="'Content-Length: 5 5' -> 400, close.")
cl_case("cl_hex", b"Content-Length: 0x5\r\n", doc="'Content-Length: 0x5' -> 400, close.")
cl_case("cl_list_differing", b"Content-Length: 5, 40\r\n",
        doc="'Content-Length: 5, 40' -> 400, close (RFC 9110 §8.6).")
cl_case("cl_duplicate_differing", b"Content-Length: 5\r\nContent-Length: 40\r\n",
        doc="two Content-Length lines 5 and 40 -> 400, close.")
cl_case("cl_list_same", b"Content-Length: 5, 5\r\n", valid_body=b"hello",
        doc="'Content-Length: 5, 5': RFC 9110 §8.6 allows accepting it as 5. Policy: 400.")
cl_case("cl_duplicate_same", b"Content-Length: 5\r\nContent-Length: 5\r\n", valid_body=b"hello",
        doc="two identical Content-Length lines: may be accepted as one. Policy: 400.")


def chunk_case(name, chunks, doc, lf_reading_body=None):
    """An invalid chunked body. RFC: the request never completes at the origin and the client
    connection closes (with an error status if any). Policy: 400. When the body is valid under
    the RFC 9112 §2.2 bare-LF allowance, consistent processing as `lf_reading_body` also passes."""
    def fn(ctx):
        x = ctx.exchange(post(b"Transfer-Encoding: chunked\r\n", chunks), close=True)
        rfc = reject_body(x)
        if lf_reading_body is not None:
            rfc = any_of(rfc, processed(x, lf_reading_body))
        return Verdicts(x, rfc=with_generic(x, rfc), policy=with_generic(x, reject_body(x, 400)))
    fn.__name__ = name
    fn.__doc__ = doc
    return case("smuggling")(fn)


chunk_case("chunk_size_overflow", b"ffffffffffffffffff\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
           "chunk size 'ffffffffffffffffff' (72 bits) must not wrap around.")
chunk_case("chunk_size_0x", b"0x5\r\nhello\r\n0\r\n\r\n" + SMUGGLED, "chunk size '0x5'.")
chunk_case("chunk_size_negative", b"-5\r\nhello\r\n0\r\n\r\n" + SMUGGLED, "chunk size '-5'.")
chunk_case("chunk_missing_crlf", b"5\r\nhelloXX0\r\n\r\n" + SMUGGLED,
           "chunk data not followed by CRLF.")
chunk_case("chunk_ext_bare_cr", b"5;a\rb\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
           "bare CR inside a chunk extension (invalid whether or not CR is read as SP).")
chunk_case("chunk_ext_bare_lf", b"5;a\nb\r\nhello\r\n0\r\n\r\n" + SMUGGLED,
           "bare LF inside a chunk extension (invalid whether or not LF ends the line).")
chunk_case("chunk_lines_bare_lf", b"5\nhello\n0\n\n",
           "chunk lines ended by bare LF: refuse, or (RFC 9112 §2.2 allowance) read as 'hello'. "
           "Policy: 400.", lf_reading_body=b"hello")


@case("smuggling")
def chunked_last_chunk_bare_lf(ctx):
    """'0\\r\\n\\n' ends the chunked body with a bare LF, then a second request. Strictly the
    message is invalid (refuse, close, the second request never reaches the origin); with the
    bare-LF allowance both requests are valid and both may be processed. Policy: 400, close."""
    second = b"GET /second HTTP/1.1\r\nHost: h\r\n\r\n"
    x = ctx.exchange(post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n0\r\n\n" + second),
                     n=2, close=True)
    reqs = x.origin_complete()
    lf = first_fail(
        ok() if [r.target for r in reqs] == [b"/p", b"/second"] and reqs[0].body == b"hello"
        else fail("origin got %r" % reqs),
        ok() if x.final_statuses() == [200, 200] else fail("statuses %s" % x.final_statuses()),
        ok("processed both requests (bare-LF allowance)"))
    strict = reject_body(x, 400)
    second_seen = [r for r in x.origin_requests() if r.target == b"/second"]
    if second_seen and strict[0]:
        strict = fail("the request behind the refused one reached the origin")
    return Verdicts(x, rfc=with_generic(x, any_of(reject_body(x), lf)),
                    policy=with_generic(x, strict))


@case("smuggling")
def bare_lf_head(ctx):
    """Request line and fields ended by bare LF: refuse (400) or process (RFC 9112 §2.2 MAY) and
    forward with CRLF. Policy: 400, close."""
    x = ctx.exchange(b"GET /lf HTTP/1.1\nHost: h\nX-A: 1\n\n", close=False)
    return Verdicts(x, rfc=with_generic(x, any_of(reject(x, (400,), close=False),
                                                  processed(x, b"", target=b"/lf"))),
                    policy=with_generic(x, reject(x, (400,), close=True)))


@case("smuggling")
def bare_lf_hides_cl(ctx):
    """A bare LF before 'Content-Length' in the field section; the body is a request. Refuse, or
    honour the Content-Length (the request is body data); never forward it as a request.
    Policy: 400, close."""
    x = ctx.exchange(b"POST /p HTTP/1.1\r\nHost: h\r\nX-A: 1\nContent-Length: %d\r\n\r\n" %
                     len(SMUGGLED) + SMUGGLED, close=True)
    return Verdicts(x, rfc=with_generic(x, any_of(reject(x, (400,), close=False),
                                                  processed(x, SMUGGLED))),
                    policy=with_generic(x, reject(x, (400,), close=True)))


def field_case(name, line, check_forwarded, doc):
    """An invalid field line: refuse with 400, or (where the RFC allows it) repair it; the origin
    must never see the invalid bytes. Policy: 400, close."""
    def fn(ctx):
        x = ctx.exchange(req("GET", "/f", line + b"\r\nX-After: 1\r\n"), close=False)
        alts = [reject(x, (400,), close=False)]
        if check_forwarded is not None:
            reqs = x.origin_complete()
            if len(reqs) == 1:
                alts.append(first_fail(check_forwarded(reqs[0]), c_status(x, (200,)),
                                       ok("forwarded repaired")))
            else:
                alts.append(fail("origin got %d complete requests" % len(reqs)))
        return Verdicts(x, rfc=with_generic(x, any_of(*alts)),
                        policy=with_generic(x, reject(x, (400,), close=True)))
    fn.__name__ = name
    fn.__doc__ = doc
    return case("smuggling")(fn)


def value_repaired(name, must):
    def check(m):
        v = m.get(name)
        if v is None:
            return fail("field %s missing at the origin" % name)
        for b in must:
            if b not in v:
                return fail("field %s forwarded as %s" % (name, show(v)))
        return ok()
    return check


def field_absent(name):
    def check(m):
        if m.get(name) is not None or any(name.lower().encode() in k.lower() for k, _ in m.headers):
            return fail("invalid field %s forwarded" % name)
        return ok()
    return check


field_case("obs_fold", b"X-Fold: a\r\n b", value_repaired("x-fold", [b"a", b"b"]),
           "obs-fold in a request (RFC 9112 §5.2): 400, or replace it by SP before forwarding.")
field_case("nul_in_value", b"X-Nul: a\x00b", value_repaired("x-nul", [b"a", b"b"]),
           "NUL in a field value (RFC 9110 §5.5): reject, or replace it by SP.")
field_case("cr_in_value", b"X-Cr: a\rb", value_repaired("x-cr", [b"a", b"b"]),
           "bare CR in a field value (RFC 9110 §5.5, RFC 9112 §2.2): reject, or replace by SP.")
field_case("bad_name_char", b"X(A): b", field_absent("X(A)"),
           "'(' in a field name (not a token): 400, or drop the field.")
field_case("space_in_name", b"X A: b", field_absent("X A"),
           "space inside a field name: 400, or drop the field.")
field_case("field_without_colon", b"X-No-Colon", field_absent("X-No-Colon"),
           "a field line without a colon: 400, or drop it.")


@case("smuggling")
def missing_host(ctx):
    """HTTP/1.1 request without Host -> 400 (RFC 9112 §3.2 MUST)."""
    x = ctx.exchange(req("GET", "/", host=None), close=False)
    return Verdicts(x, rfc=with_generic(x, reject(x, (400,), close=False)),
                    policy=with_generic(x, reject(x, (400,), close=True)))


@case("smuggling")
def two_hosts(ctx):
    """Two Host fields -> 400 (RFC 9112 §3.2 MUST)."""
    x = ctx.exchange(req("GET", "/", b"Host: evil\r\n"), close=False)
    return Verdicts(x, rfc=with_generic(x, reject(x, (400,), close=False)),
                    policy=with_generic(x, reject(x, (400,), close=True)))


@case("smuggling")
def host_invalid(ctx):
    """A Host value that is not uri-host[:port] ('h h') -> 400 (RFC 9112 §3.2 MUST)."""
    x = ctx.exchange(req("GET", "/", host=b"h h"), close=False)
    return Verdicts(x, rfc=with_generic(x, reject(x, (400,), close=False)))


@case("smuggling")
def version_09(ctx):
    """An HTTP/0.9 request line 'GET /nine'. Policy: refused with 400 or 505 (docs/http1.md
    gives 505 for other versions and 400 for a malformed one; a missing version reads as
    either), closed, nothing forwarded."""
    x = ctx.exchange(b"GET /nine\r\n\r\n", close=True)
    return Verdicts(x, policy=with_generic(x, reject(x, (400, 505), close=True)))


@case("smuggling")
def version_12(ctx):
    """HTTP/1.2: RFC 9110 §6.2 says process it as HTTP/1.1 (SHOULD); refusing is safe. A
    forwarded request carries the proxy's own version (MUST). Policy: 505."""
    x = ctx.exchange(req("GET", "/v12", version=b"HTTP/1.2"), close=False)
    reqs = x.origin_complete()
    fwd = first_fail(processed(x, b"", target=b"/v12"),
                     ok() if reqs and reqs[0].version in (b"HTTP/1.1", b"HTTP/1.0")
                     else fail("forwarded with version %s" % (reqs[0].version if reqs else "-")))
    return Verdicts(x, rfc=with_generic(x, any_of(fwd, reject(x, (400, 505), close=False))),
                    policy=with_generic(x, reject(x, (505,), close=False)))


@case("smuggling")
def version_20(ctx):
    """'GET / HTTP/2.0' in HTTP/1 syntax. The RFC only says a server "can" refuse a major
    version with 505 (RFC 9112 §2.3), so this is policy only: 505, nothing forwarded."""
    x = ctx.exchange(req("GET", "/v20", version=b"HTTP/2.0"), close=False)
    return Verdicts(x, policy=with_generic(x, reject(x, (505,), close=False)))


@case("smuggling")
def version_garbage(ctx):
    """'GET / HTTX/1.1': not an HTTP-version -> 400 (or 505). Policy: 400."""
    x = ctx.exchange(req("GET", "/vx", version=b"HTTX/1.1"), close=False)
    return Verdicts(x, rfc=with_generic(x, reject(x, (400, 505), close=False)),
                    policy=with_generic(x, reject(x, (400,), close=False)))


@case("smuggling")
def method_invalid(ctx):
    """A method with a non-token character ('G(T') -> 400 (or 501); nothing forwarded."""
    x = ctx.exchange(req("G(T", "/m"), close=False)
    return Verdicts(x, rfc=with_generic(x, reject(x, (400, 501), close=False)),
                    policy=with_generic(x, reject(x, (400,), close=False)))


@case("smuggling")
def target_with_space(ctx):
    """'GET /a b HTTP/1.1': whitespace in the request-target -> 400 (or a 301), nothing
    forwarded (RFC 9112 §3.2)."""
    x = ctx.exchange(b"GET /a b HTTP/1.1\r\nHost: h\r\n\r\n", close=False)
    return Verdicts(x, rfc=with_generic(x, reject(x, (400, 301), close=False)),
                    policy=with_generic(x, reject(x, (400,), close=False)))


@case("smuggling")
def absolute_form_host_mismatch(ctx):
    """'GET http://a.example/x' with 'Host: b.example': the target's authority wins (RFC 9112
    §3.2.2); a forwarded request must name a.example as its host, never b.example alone."""
    x = ctx.exchange(b"GET http://a.example/x HTTP/1.1\r\nHost: b.example\r\n\r\n", close=False)
    reqs = x.origin_complete()
    if len(reqs) == 1:
        m = reqs[0]
        host = (m.get("host") or b"").lower()
        if m.target.lower().startswith(b"http://a.example/"):
            # The origin must then ignore Host (RFC 9112 §3.2.2), so the target decides.
            fwd = ok("forwarded in absolute-form to a.example (Host %s)" % show(host))
        elif host == b"a.example":
            fwd = ok("forwarded with Host: a.example")
        else:
            fwd = fail("forwarded %s with Host %s: the request-target's host a.example was lost"
                       % (show(m.target), show(host)))
    else:
        fwd = fail("origin got %d complete requests" % len(reqs))
    return Verdicts(x, rfc=with_generic(x, any_of(fwd, reject(x, (400,), close=False))))


@case("smuggling")
def get_body_hides_request(ctx):
    """A GET with Content-Length whose body is a request: the body must be forwarded as body (or
    the request refused), never parsed as a second request."""
    x = ctx.exchange(req("GET", "/g", b"Content-Length: %d\r\n" % len(SMUGGLED), SMUGGLED),
                     close=False)
    return Verdicts(x, rfc=with_generic(x, any_of(processed(x, SMUGGLED),
                                                  reject(x, (400, 411, 413), close=True))))


@case("smuggling")
def post_body_hides_request(ctx):
    """A POST whose Content-Length body is a complete request: one request at the origin, with
    that body; one response."""
    x = ctx.exchange(post(b"Content-Length: %d\r\n" % len(SMUGGLED), SMUGGLED), close=False)
    return Verdicts(x, rfc=with_generic(x, first_fail(c_no_second_response(x),
                                                      processed(x, SMUGGLED))))


# ===================================== limits ==================================================
# portico's defaults (docs/http1.md): header section (request line, fields and the final empty
# line) up to 65536 bytes, up to 128 fields, request-target up to 8192 bytes.


def sized_request(total, target=b"/big"):
    """A GET whose whole head is exactly `total` bytes (padding in one X-Pad field)."""
    base = b"GET " + target + b" HTTP/1.1\r\nHost: h\r\nX-Pad: \r\n\r\n"
    pad = total - len(base)
    assert pad > 0
    return b"GET " + target + b" HTTP/1.1\r\nHost: h\r\nX-Pad: " + b"a" * pad + b"\r\n\r\n"


@case("limits")
def header_section_64k(ctx):
    """A request head of exactly 65536 bytes is forwarded intact. Policy (portico default)."""
    data = sized_request(65536)
    pad = len(data) - len(b"GET /big HTTP/1.1\r\nHost: h\r\nX-Pad: \r\n\r\n")
    x = ctx.exchange(data, close=False)
    reqs = x.origin_complete()
    got = len(reqs[0].get("x-pad") or b"") if reqs else -1
    return Verdicts(x, policy=with_generic(x, first_fail(
        c_status(x, (200,)),
        ok() if got == pad else fail("origin got X-Pad of %d bytes, want %d" % (got, pad)),
        ok("200, forwarded intact"))))


@case("limits")
def header_section_64k_plus_1(ctx):
    """A request head of 65537 bytes -> 431 and close. Policy (portico default)."""
    x = ctx.exchange(sized_request(65537), close=True)
    return Verdicts(x, policy=with_generic(x, reject(x, (431,), close=True)))


def many_fields(n):
    fields = b"".join(b"X-F-%d: %d\r\n" % (i, i) for i in range(1, n))
    return req("GET", "/fields", fields)  # Host + n-1 fields


@case("limits")
def fields_128(ctx):
    """128 fields (Host + 127) are forwarded. Policy (portico default)."""
    x = ctx.exchange(many_fields(128), close=False)
    reqs = x.origin_complete()
    got = sum(1 for k, _ in reqs[0].headers if k.startswith(b"X-F-")) if reqs else 0
    return Verdicts(x, policy=with_generic(x, first_fail(
        c_status(x, (200,)), ok() if got == 127 else fail("origin got %d of the 127 X-F fields" % got),
        ok("200, all fields forwarded"))))


@case("limits")
def fields_129(ctx):
    """129 fields -> 431. Policy (portico default)."""
    x = ctx.exchange(many_fields(129), close=False)
    return Verdicts(x, policy=with_generic(x, reject(x, (431,), close=False)))


@case("limits")
def target_8k(ctx):
    """A request-target of 8192 bytes is forwarded intact. Policy (portico default)."""
    target = b"/" + b"t" * 8191
    x = ctx.exchange(req("GET", target), close=False)
    return Verdicts(x, policy=with_generic(x, processed(x, b"", target=target)))


@case("limits")
def target_8k_plus_1(ctx):
    """A request-target of 8193 bytes -> 414. Policy (portico default)."""
    x = ctx.exchange(req("GET", b"/" + b"t" * 8192), close=False)
    return Verdicts(x, policy=with_generic(x, reject(x, (414,), close=False)))


@case("limits")
def target_100k(ctx):
    """A 100 KB request-target: forwarded intact, or refused with 414 - RFC 9112 §3 says a
    server that does not want to parse a target that long MUST answer 414."""
    target = b"/" + b"t" * 100000
    x = ctx.exchange(req("GET", target), close=False)
    return Verdicts(x, rfc=with_generic(x, any_of(processed(x, b"", target=target),
                                                  reject(x, (414,), close=False))))


# ===================================== framing =================================================


@case("framing")
def chunked_request_reframed(ctx):
    """A chunked request body reaches the origin intact and well-framed."""
    x = ctx.exchange(post(b"Transfer-Encoding: chunked\r\n", b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"))
    return Verdicts(x, rfc=with_generic(x, processed(x, b"hello world")))


@case("framing")
def chunked_request_trailers(ctx):
    """A chunked request with a trailer field: body intact (RFC). Policy: the trailer reaches the
    origin."""
    x = ctx.exchange(post(b"Transfer-Encoding: chunked\r\nTrailer: X-Req-Trailer\r\n",
                          b"5\r\nhello\r\n0\r\nX-Req-Trailer: yes\r\n\r\n"))
    reqs = x.origin_complete()
    trailer = any(k.lower() == b"x-req-trailer" and v == b"yes"
                  for m in reqs for k, v in m.trailers + m.headers)
    return Verdicts(x, rfc=with_generic(x, processed(x, b"hello")),
                    policy=with_generic(x, first_fail(
                        processed(x, b"hello"),
                        ok("trailer forwarded") if trailer else fail("trailer not forwarded"))))


@case("framing")
def large_request_body(ctx):
    """A 1 MiB Content-Length request body reaches the origin byte for byte."""
    body = bytes(range(256)) * 4096
    x = ctx.exchange(post(b"Content-Length: %d\r\n" % len(body), body))
    return Verdicts(x, rfc=with_generic(x, processed(x, body)))


@case("framing")
def large_response_body(ctx):
    """A 1 MiB response body reaches the client byte for byte."""
    body = bytes(range(256)) * 4096
    x = ctx.exchange(req("GET", "/large"), script=serve_raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\nConnection: close\r\n\r\n" % len(body) + body))
    r = x.first()
    return Verdicts(x, rfc=with_generic(x, first_fail(
        c_status(x, (200,)),
        ok() if r.complete and r.body == body else fail("body %d bytes, complete=%s" % (len(r.body), r.complete)),
        ok("1 MiB intact"))))


@case("framing")
def pipelined_in_order(ctx):
    """Three pipelined GETs are answered in order."""
    x = ctx.exchange(req("GET", "/p1") + req("GET", "/p2") + req("GET", "/p3"), n=3)
    bodies = [r.body for r in x.responses]
    want = [b"origin:GET /p1", b"origin:GET /p2", b"origin:GET /p3"]
    return Verdicts(x, rfc=with_generic(x, ok("3 responses in order") if bodies == want
                                        else fail("got bodies %s" % [show(b, 30) for b in bodies])))


@case("framing")
def head_response_no_body(ctx):
    """HEAD then GET pipelined: the HEAD response (Content-Length: 14, no body) must not swallow
    the GET's response."""
    x = ctx.exchange(req("HEAD", "/h") + req("GET", "/g"), n=2, methods=["HEAD", "GET"])
    st = x.final_statuses()
    ok_ = len(x.responses) >= 2 and st[:2] == [200, 200] and x.responses[0].body == b"" and \
        x.responses[1].body == b"origin:GET /g"
    return Verdicts(x, rfc=with_generic(x, ok("HEAD answered without body, GET intact") if ok_
                                        else fail("responses %r leftover %s" % (x.responses, show(x.leftover, 80)))))


def no_body_status_case(name, status_line, fields, doc):
    def fn(ctx):
        def raw(r):
            if r.target == b"/a":
                return b"HTTP/1.1 " + status_line + b"\r\nContent-Length: 5\r\n" + fields + \
                    b"Connection: close\r\n\r\nhello"
            return origin_response(r)
        x = ctx.exchange(req("GET", "/a", b"If-None-Match: \"x\"\r\n") + req("GET", "/b"), n=2,
                         script=serve_raw(raw))
        st = x.final_statuses()
        good = len(x.responses) >= 2 and st[0] == int(status_line[:3]) and x.responses[0].body == b"" \
            and x.responses[1].status == 200 and x.responses[1].body == b"origin:GET /b"
        return Verdicts(x, rfc=with_generic(x, ok("%s without body, next response intact" % st[0]) if good
                                            else fail("responses %r, leftover %s" % (x.responses, show(x.leftover, 80)))))
    fn.__name__ = name
    fn.__doc__ = doc
    return case("framing")(fn)


no_body_status_case("status_204_no_body", b"204 No Content", b"",
                    "origin sends 204 with 'Content-Length: 5' and 5 bytes: the 204 ends at its "
                    "head (RFC 9112 §6.3); the pipelined next response must be intact.")
no_body_status_case("status_304_no_body", b"304 Not Modified", b"ETag: \"x\"\r\n",
                    "origin sends 304 with 'Content-Length: 5' and 5 bytes: same as 204.")


@case("framing")
def response_close_delimited(ctx):
    """A response without Content-Length or chunked, delimited by the origin's close: the client
    gets the whole body, framed (chunked, Content-Length, or close-delimited and closed)."""
    x = ctx.exchange(req("GET", "/c"), script=serve_raw(
        b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nclose-delimited body"), close=False)
    r = x.first()
    if r is not None and r.framing == "close" and not x.client.eof:
        x.client.wait_close(CLOSE_WAIT)
        x.refresh()
        r = x.first()
    return Verdicts(x, rfc=with_generic(x, first_fail(
        c_status(x, (200,)),
        ok() if r.complete and r.body == b"close-delimited body"
        else fail("body %s complete=%s" % (show(r.body), r.complete)),
        ok("body intact (%s)" % r.framing))))


@case("framing")
def response_chunked_trailers(ctx):
    """A chunked response with a trailer: body intact (RFC); policy: the trailer is forwarded to
    an HTTP/1.1 client that sent 'TE: trailers'."""
    x = ctx.exchange(req("GET", "/t", b"TE: trailers\r\n"), script=serve_raw(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nTrailer: X-Trail\r\nConnection: close\r\n\r\n"
        b"5\r\nhello\r\n6\r\n world\r\n0\r\nX-Trail: yes\r\n\r\n"))
    r = x.first()
    body_ok = first_fail(c_status(x, (200,)),
                         ok() if r.complete and r.body == b"hello world"
                         else fail("body %s complete=%s" % (show(r.body), r.complete)),
                         ok("body intact"))
    trailer = r is not None and any(k.lower() == b"x-trail" and v == b"yes"
                                    for k, v in r.trailers + r.headers)
    return Verdicts(x, rfc=with_generic(x, body_ok), policy=with_generic(x, first_fail(
        body_ok, ok("trailer forwarded") if trailer else fail("trailer X-Trail not forwarded"))))


@case("framing")
def http10_client_chunked_origin(ctx):
    """An HTTP/1.0 client and a chunked origin response: no Transfer-Encoding toward the client
    (RFC 9112 §6.1), body intact."""
    x = ctx.exchange(req("GET", "/ten", version=b"HTTP/1.0"), versions=[b"HTTP/1.0"],
                     script=serve_raw(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
                                      b"5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n"))
    r = x.first()
    if r is not None and r.framing == "close" and not x.client.eof:
        x.client.wait_close(CLOSE_WAIT)
        x.refresh()
        r = x.first()
    return Verdicts(x, rfc=with_generic(x, first_fail(
        c_status(x, (200,)),
        ok() if r.complete and r.body == b"hello world" else fail("body %s" % show(r.body)),
        ok("body intact, no Transfer-Encoding"))))


@case("framing")
def hop_by_hop_request(ctx):
    """Fields named in Connection are removed before forwarding (RFC 9110 §7.6.1); policy: also
    Keep-Alive, Proxy-Connection and TE (other than trailers)."""
    x = ctx.exchange(req("GET", "/hop", b"Connection: X-Secret, keep-alive\r\nX-Secret: s3cret\r\n"
                         b"Keep-Alive: timeout=5\r\nProxy-Connection: keep-alive\r\nTE: gzip\r\n"
                         b"X-Kept: yes\r\n"))
    reqs = x.origin_complete()
    m = reqs[0] if reqs else None

    def rfc_check():
        if m is None:
            return fail("origin got no request")
        if m.get("x-secret") is not None:
            return fail("X-Secret (named in Connection) was forwarded")
        for v in m.all("connection"):
            if b"x-secret" in v.lower():
                return fail("Connection still names X-Secret")
        if m.get("x-kept") != b"yes":
            return fail("X-Kept was not forwarded")
        return ok("X-Secret removed")

    def policy_check():
        left = [n for n in ("keep-alive", "proxy-connection", "te") if m is not None and m.get(n) is not None]
        return fail("forwarded: %s" % ", ".join(left)) if left else ok("Keep-Alive, Proxy-Connection, TE removed")
    return Verdicts(x, rfc=with_generic(x, first_fail(c_status(x, (200,)), rfc_check())),
                    policy=with_generic(x, first_fail(c_status(x, (200,)), rfc_check(), policy_check())))


@case("framing")
def hop_by_hop_response(ctx):
    """Fields the origin names in its Connection are removed toward the client (RFC 9110
    §7.6.1); policy: Keep-Alive too."""
    x = ctx.exchange(req("GET", "/hopr"), script=serve_raw(
        b"HTTP/1.1 200 OK\r\nConnection: close, X-Resp-Secret\r\nX-Resp-Secret: s\r\n"
        b"Keep-Alive: timeout=5\r\nX-Resp-Kept: yes\r\nContent-Length: 2\r\n\r\nok"))
    r = x.first()
    rfc = first_fail(c_status(x, (200,)),
                     fail("X-Resp-Secret forwarded") if r.get("x-resp-secret") is not None else None,
                     fail("X-Resp-Kept lost") if r.get("x-resp-kept") != b"yes" else None,
                     ok("X-Resp-Secret removed"))
    pol = first_fail(rfc, fail("Keep-Alive forwarded") if r is not None and r.get("keep-alive") is not None
                     else ok("Keep-Alive removed"))
    return Verdicts(x, rfc=with_generic(x, rfc), policy=with_generic(x, pol))


@case("framing")
def expect_100_continue(ctx):
    """'Expect: 100-continue': the client waits (up to 1.5 s) for a 100 before sending the body;
    the final response is 200 and the origin got the body. Policy: a 100 reaches the client."""
    ctx.case.script = serve_normal
    x = Exchange(ctx, b"", [])
    x.client = ctx.connect()
    head = post(b"Content-Length: 5\r\nExpect: 100-continue\r\n", b"")
    x.sent = head
    x.client.send(head)
    got_100 = x.client.read_until(lambda d: re.match(rb"HTTP/1\.[01] 1\d\d", d) is not None
                                  and b"\r\n\r\n" in d, 1.5)
    x.client.send(b"hello")
    x.sent += b"hello"
    x.client.read_responses(1)
    x.refresh()
    ctx.settle(x)
    r = x.first()
    interim = [i.status for i in r.interim] if r else []
    rfc = first_fail(processed(x, b"hello"))
    pol = first_fail(rfc, ok("100 Continue relayed") if got_100 and 100 in interim
                     else fail("no 100 Continue before the body (interim: %s)" % interim))
    return Verdicts(x, rfc=with_generic(x, rfc), policy=with_generic(x, pol))


@case("framing")
def upgrade_websocket(ctx):
    """WebSocket upgrade: the 101 is relayed, then bytes flow both ways, and the client's close
    reaches the origin (RFC 9110 §7.8)."""
    def script(conn):
        if not conn.read_head():
            return
        conn.send(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                  b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\nfrom-origin\n")
        if conn.read_until(lambda d: b"from-client\n" in d):
            conn.send(b"echo:from-client\n")
        conn.wait_eof(5)
    ctx.case.script = script
    x = Exchange(ctx, b"", [])
    x.client = ctx.connect()
    x.sent = req("GET", "/ws", b"Upgrade: websocket\r\nConnection: Upgrade\r\n"
                 b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n")
    x.client.send(x.sent)
    got_origin = x.client.read_until(lambda d: b"from-origin\n" in d)
    x.refresh()
    checks = [c_status(x, (101,))]
    if not got_origin:
        checks.append(fail("tunnel: origin's bytes did not reach the client"))
    else:
        x.client.send(b"from-client\n")
        x.sent += b"from-client\n"
        if not x.client.read_until(lambda d: b"echo:from-client\n" in d):
            checks.append(fail("tunnel: client's bytes did not reach the origin (or no echo)"))
    x.client.close()
    t_close = time.monotonic()
    case_ = ctx.case
    eof = ctx.origin.wait(lambda: all(c.eof_at is not None for c in case_.conns) and case_.conns,
                          CLOSE_WAIT)
    ctx.settle(x, 0)
    reqs = x.origin_requests()
    if reqs and (reqs[0].get("upgrade") or b"").lower() != b"websocket":
        checks.append(fail("origin got no 'Upgrade: websocket'"))
    if not eof:
        checks.append(fail("client closed the tunnel; the origin side stayed open %.1fs" % CLOSE_WAIT))
    checks.append(ok("101, bytes both ways, close propagated (%.2fs)" % (time.monotonic() - t_close)))
    return Verdicts(x, rfc=with_generic(x, first_fail(*checks)))


@case("framing")
def connect_refused(ctx):
    """CONNECT (not enabled). Policy: 405, nothing sent to the origin."""
    x = ctx.exchange(b"CONNECT 127.0.0.1:9 HTTP/1.1\r\nHost: 127.0.0.1:9\r\n\r\n", close=False)
    return Verdicts(x, policy=with_generic(x, reject(x, (405,), close=False)))


# ===================================== upstream faults ==========================================


def upstream_case(name, raw, doc, policy_502=True, rfc=None):
    """The origin answers `raw` then closes. rfc(x) decides the RFC verdict (default: 502);
    policy: 502."""
    def fn(ctx):
        x = ctx.exchange(req("GET", "/u"), script=serve_raw(raw), close=False)
        r_rfc = rfc(x) if rfc else c_status(x, (502,))
        return Verdicts(x, rfc=with_generic(x, r_rfc),
                        policy=with_generic(x, c_status(x, (502,))) if policy_502 else None)
    fn.__name__ = name
    fn.__doc__ = doc
    return case("upstream")(fn)


def relayed(body, extra=None):
    """The response was relayed as a 200 with exactly `body`, framed correctly."""
    def check(x):
        r = x.first()
        if r is not None and r.status == 200 and r.framing == "close" and not x.client.eof:
            x.client.wait_close(CLOSE_WAIT)
            x.refresh()
            r = x.first()
        c = first_fail(c_status(x, (200,)),
                       ok() if r.complete and r.body == body
                       else fail("relayed body %s complete=%s" % (show(r.body, 60), r.complete)),
                       extra(r) if extra else None, ok("relayed correctly"))
        return c
    return check


def bad_gateway_or(check):
    return lambda x: any_of(c_status(x, (502,)), check(x))


upstream_case("resp_cl_te", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n"
              b"Connection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
              "response with Content-Length and chunked: 502, or relay decoded as chunked without "
              "Content-Length (RFC 9112 §6.1). Policy: 502.",
              rfc=bad_gateway_or(relayed(b"hello")))
upstream_case("resp_bare_lf", b"HTTP/1.1 200 OK\nContent-Length: 5\nConnection: close\n\nhello",
              "response head with bare LF: 502, or (RFC 9112 §2.2 MAY) relay it well-formed. "
              "Policy: 502.", rfc=bad_gateway_or(relayed(b"hello")))
upstream_case("resp_cl_differing", b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nContent-Length: 6\r\n"
              b"Connection: close\r\n\r\nhello!",
              "two differing Content-Length lines in a response: 502 (RFC 9112 §6.3 MUST).")
upstream_case("resp_cl_plus", b"HTTP/1.1 200 OK\r\nContent-Length: +5\r\nConnection: close\r\n\r\nhello",
              "'Content-Length: +5' in a response: 502 (RFC 9112 §6.3 MUST).")
upstream_case("resp_bad_status_line", b"HTTP/1.1 20 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
              "status code of two digits: an invalid response, 502.")
upstream_case("resp_obs_fold", b"HTTP/1.1 200 OK\r\nX-Fold: a\r\n b\r\nContent-Length: 5\r\n"
              b"Connection: close\r\n\r\nhello",
              "obs-fold in a response: 502, or replace it by SP (RFC 9112 §5.2). Policy: 502.",
              rfc=bad_gateway_or(relayed(b"hello", lambda r: ok() if r.get("x-fold") and b"a" in r.get("x-fold")
                                         and b"b" in r.get("x-fold") else fail("X-Fold mangled"))))
upstream_case("resp_nul_in_value", b"HTTP/1.1 200 OK\r\nX-Nul: a\x00b\r\nContent-Length: 5\r\n"
              b"Connection: close\r\n\r\nhello",
              "NUL in a response field value: 502, or replace it by SP (RFC 9110 §5.5). Policy: 502.",
              rfc=bad_gateway_or(relayed(b"hello")))
upstream_case("resp_oversize_header",
              b"HTTP/1.1 200 OK\r\n" + b"".join(b"X-Big-%d: %s\r\n" % (i, b"b" * 1000) for i in range(70))
              + b"Content-Length: 2\r\nConnection: close\r\n\r\nok",
              "70 KB of response fields: relay intact or 502. Policy: 502 (past the 64 KiB limit).",
              rfc=bad_gateway_or(relayed(b"ok", lambda r: ok() if len(r.all("x-big-69")) == 1
                                         else fail("fields lost"))))
@case("upstream")
def resp_101_unsolicited(ctx):
    """A 101 to a request without Upgrade. Policy: 502."""
    x = ctx.exchange(req("GET", "/u"), script=serve_raw(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"))
    return Verdicts(x, policy=with_generic(x, c_status(x, (502,))))


upstream_case("resp_te_gzip_close_delimited",
              b"HTTP/1.1 200 OK\r\nTransfer-Encoding: gzip\r\nConnection: close\r\n\r\n" +
              gzip.compress(b"hello", mtime=0),
              "response 'Transfer-Encoding: gzip' (chunked not final) is delimited by close (RFC 9112 "
              "§6.3). Relayed, the client must be able to decode 'hello' from what it gets (the gzip "
              "coding kept, or decoded); refusing it with 502 is safe too.", policy_502=False,
              rfc=bad_gateway_or(lambda x: _te_gzip_check(x)))


def _te_gzip_check(x):
    r = x.first()
    if r is not None and not r.complete and not x.client.eof:
        x.client.wait_close(CLOSE_WAIT)
        x.refresh()
        r = x.first()
    if r is None or r.status != 200:
        return fail("got %s for a valid close-delimited response" % (r.status if r else "no response"))
    if not r.complete:
        return fail("response incomplete")
    codings = r.te_codings() or []
    body = r.body
    try:
        for c in reversed([c for c in codings if c != b"chunked"]):
            if c in (b"gzip", b"x-gzip"):
                body = gzip.decompress(body)
        if not codings and r.get("content-encoding") in (b"gzip",):
            body = gzip.decompress(body)
    except Exception as e:
        return fail("cannot decode the relayed body (%s): TE %s" % (e, codings))
    if body != b"hello":
        return fail("decoded body %s (TE %s)" % (show(body, 60), codings))
    return ok("relayed; client decodes 'hello'")


@case("upstream")
def resp_103_then_200(ctx):
    """An interim 103 before the 200: the final response reaches the client intact (the 103 may
    be relayed or dropped)."""
    x = ctx.exchange(req("GET", "/e"), script=serve_raw(
        b"HTTP/1.1 103 Early Hints\r\nLink: </s.css>; rel=preload\r\n\r\n"
        b"HTTP/1.1 200 OK\r\nContent-Length: 5\r\nConnection: close\r\n\r\nhello"))
    return Verdicts(x, rfc=with_generic(x, relayed(b"hello")(x)))


@case("upstream")
def origin_closes_before_response(ctx):
    """The origin reads the request and closes without a byte: 502."""
    x = ctx.exchange(req("GET", "/u"), script=serve_close_at_once)
    return Verdicts(x, rfc=with_generic(x, c_status(x, (502,))))


@case("upstream")
def origin_closes_mid_head(ctx):
    """The origin sends part of a status line and fields, then closes: 502."""
    x = ctx.exchange(req("GET", "/u"), script=serve_raw(b"HTTP/1.1 200 OK\r\nContent-Le"))
    return Verdicts(x, rfc=with_generic(x, c_status(x, (502,))))


@case("upstream")
def origin_stalls(ctx):
    """The origin never answers: 504 after the proxy's 1 s upstream read timeout (checked < 4 s),
    and the proxy closes the upstream connection."""
    x = ctx.exchange(req("GET", "/slow"), script=serve_stall(6.0), read_timeout=4.0)
    elapsed = time.monotonic() - x.t_sent
    case_ = ctx.case
    closed = ctx.origin.wait(lambda: case_.conns and all(c.eof_at is not None for c in case_.conns),
                             CLOSE_WAIT)
    ctx.settle(x, 0)
    return Verdicts(x, rfc=with_generic(x, first_fail(
        c_status(x, (504,)),
        ok() if closed else fail("upstream connection left open after the 504"),
        ok("504 after %.2fs, upstream closed" % elapsed))))


def truncated_check(x, expected_len):
    """After an upstream close mid-body, the client must see the truncation: either a 502 (if
    nothing was sent yet), or an incomplete message followed by the connection's close."""
    r = x.first()
    if r is None:
        return fail("no response at all" + ("" if x.client.eof else " and connection left open"))
    if r.status == 502 and r.complete:
        return ok("502")
    if r.complete:
        return fail("client got a complete-looking %s response with a %d-byte body (%s framing); "
                    "the origin sent only part of %d bytes" % (r.status, len(r.body), r.framing,
                                                               expected_len))
    if not x.client.eof:
        if not x.client.wait_close(CLOSE_WAIT):
            return fail("truncated response and the connection stayed open")
        x.refresh()
        r = x.first()
        if r.complete:
            return fail("complete-looking response (%s framing)" % r.framing)
    return ok("incomplete %s (%d body bytes), then closed" % (r.status, len(r.body)))


@case("upstream")
def origin_closes_mid_body_cl(ctx):
    """Content-Length: 100, 10 bytes, then the origin closes: the client must not get a
    complete-looking response."""
    x = ctx.exchange(req("GET", "/u"), script=serve_raw(
        b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\nConnection: close\r\n\r\n0123456789"))
    return Verdicts(x, rfc=with_generic(x, truncated_check(x, 100)))


@case("upstream")
def origin_closes_mid_body_chunked(ctx):
    """A chunked response without its last chunk, then the origin closes: the client must not
    get a complete-looking response."""
    x = ctx.exchange(req("GET", "/u"), script=serve_raw(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n"))
    return Verdicts(x, rfc=with_generic(x, truncated_check(x, 0)))


@case("upstream")
def origin_http10_close_delimited(ctx):
    """An HTTP/1.0 origin response delimited by close is complete at the close: the client must
    get the whole body (contrast with the truncation cases)."""
    x = ctx.exchange(req("GET", "/u"), script=serve_raw(b"HTTP/1.0 200 OK\r\n\r\nall of it"))
    return Verdicts(x, rfc=with_generic(x, relayed(b"all of it")(x)))


# ===================================== client gone ==============================================


def serve_endless(conn):
    """Headers with a huge Content-Length, then body bytes at a steady pace until the proxy
    closes the connection (or 6 s)."""
    req_ = conn.read_request(0)
    if req_ is None:
        return
    conn.send(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000000\r\nConnection: close\r\n\r\n")
    piece = b"x" * 16384
    deadline = time.monotonic() + 6.0
    conn.sock.setblocking(False)
    while time.monotonic() < deadline and conn.eof_at is None:
        r, w, _ = select.select([conn.sock, conn.case.abort_r], [conn.sock], [], 0.01)
        if conn.case.abort_r in r:
            break
        if conn.sock in r:
            conn.sock.setblocking(True)
            conn.recv_some(time.monotonic() + 0.1)
            conn.sock.setblocking(False)
            continue
        if conn.sock in w:
            try:
                conn.sock.send(piece)
            except (BlockingIOError, InterruptedError):
                pass
            except OSError:
                with conn.origin.cv:
                    conn.eof_at = time.monotonic()
                    conn.reset = True
                    conn.origin.cv.notify_all()
                break
            # pace the writes: at most ~1.6 MB/s, so buffering proxies are not flooded
            select.select([conn.case.abort_r], [], [], 0.01)
    conn.sock.setblocking(True)


@case("client")
def client_gone_mid_response(ctx):
    """The client closes while the origin is still sending a long body: the proxy must close the
    upstream connection (the origin sees EOF or a reset within 2 s)."""
    ctx.case.script = serve_endless
    x = Exchange(ctx, req("GET", "/endless"), [])
    x.client = ctx.connect()
    x.client.send(x.sent)
    got = x.client.read_until(lambda d: b"\r\n\r\n" in d and len(d) > d.find(b"\r\n\r\n") + 4 + 1000)
    x.client.close()
    t0 = time.monotonic()
    case_ = ctx.case
    closed = ctx.origin.wait(lambda: case_.conns and all(c.eof_at is not None for c in case_.conns), 2.0)
    dt = time.monotonic() - t0
    ctx.settle(x, 0)
    x.notes.append("(origin side closed %.2fs after the client left)" % dt if closed else
                   "(origin side still open 2s after the client left)")
    return Verdicts(x, rfc=first_fail(
        ok() if got else fail("no response bytes before closing"),
        ok("upstream closed %.2fs after the client left" % dt) if closed
        else fail("upstream connection still open 2s after the client left")))


@case("client")
def client_gone_before_response(ctx):
    """The client closes while the origin has not answered yet. Policy: the proxy notices and
    closes the upstream connection within 0.6 s (before its 1 s read timeout would)."""
    ctx.case.script = serve_stall(6.0)
    x = Exchange(ctx, req("GET", "/wait"), [])
    x.client = ctx.connect()
    x.client.send(x.sent)
    case_ = ctx.case
    arrived = ctx.origin.wait(lambda: any(c.requests() and c.requests()[0].complete
                                          for c in case_.conns), IO_TIMEOUT)
    x.client.close()
    t0 = time.monotonic()
    closed = ctx.origin.wait(lambda: all(c.eof_at is not None for c in case_.conns), 0.6)
    dt = time.monotonic() - t0
    ctx.settle(x, 0)
    late = ""
    if not closed:  # for the report: when did it close, if at all?
        if ctx.origin.wait(lambda: all(c.eof_at is not None for c in case_.conns), 3.0):
            late = " (closed after %.2fs)" % (max(c.eof_at for c in case_.conns) - t0)
        else:
            late = " (still open after 3.6s)"
    return Verdicts(x, policy=first_fail(
        ok() if arrived else fail("request never reached the origin"),
        ok("upstream closed %.2fs after the client left" % dt) if closed
        else fail("upstream connection still open 0.6s after the client left" + late)))


# ===================================== timeouts =================================================


@case("timeouts")
def header_read_timeout(ctx):
    """A request head that never completes: with a 1 s header timeout, the proxy closes the
    connection (with or without a 408) within 3 s; nothing reaches the origin. Policy."""
    x = ctx.exchange(b"GET /slow-head HTTP/1.1\r\nHost: h\r\nX-A: 1\r\n", close=False, read_timeout=3.0)
    if not x.client.eof:
        x.closed = x.client.wait_close(0.5)
    else:
        x.closed = True
    x.refresh()
    r = x.first()
    return Verdicts(x, policy=with_generic(x, first_fail(
        ok() if r is None or r.status == 408 else fail("got %s" % r.status),
        ok() if x.closed else fail("connection still open after 3.5s"),
        c_origin_nothing(x), ok("closed after %.2fs%s" % (time.monotonic() - x.t_sent,
                                                        " with 408" if r else "")))))


@case("timeouts")
def body_read_timeout(ctx):
    """A request body that stops half-way: with a 1 s body timeout, the client connection closes
    within 3 s, and the origin never gets a complete request and has its connection closed too.
    Policy."""
    x = ctx.exchange(post(b"Content-Length: 10\r\n", b"hello"), close=False, read_timeout=3.0)
    if not x.client.eof:
        x.closed = x.client.wait_close(0.5)
    else:
        x.closed = True
    x.refresh()
    case_ = ctx.case
    up_closed = ctx.origin.wait(lambda: all(c.eof_at is not None for c in case_.conns), CLOSE_WAIT)
    ctx.settle(x, 0)
    r = x.first()
    return Verdicts(x, policy=with_generic(x, first_fail(
        ok() if r is None or r.status >= 400 else fail("got %s" % r.status),
        ok() if x.closed else fail("client connection still open after 3.5s"),
        c_origin_no_complete(x),
        ok() if up_closed else fail("upstream connection left open"),
        ok("closed after %.2fs%s" % (time.monotonic() - x.t_sent, (" with %s" % r.status) if r else "")))))


# ===================================== robustness ===============================================


@case("robustness")
def still_serving(ctx):
    """After every other case, the proxy still answers a plain GET (it did not crash or wedge)."""
    x = ctx.exchange(req("GET", "/alive"))
    return Verdicts(x, rfc=with_generic(x, processed(x, b"", target=b"/alive")))


# ---------------------------------------------------------------------------------------------
# Runner.
# ---------------------------------------------------------------------------------------------


def start_proxy(path, origin_port, extra_args, logdir):
    cmd = [path, "--listen", "127.0.0.1:0", "--upstream", "127.0.0.1:%d" % origin_port] + extra_args
    errlog = open(os.path.join(logdir, "proxy.stderr.log"), "wb")
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=errlog, start_new_session=True)
    deadline = time.monotonic() + 15
    line = b""
    while time.monotonic() < deadline:
        r, _, _ = select.select([p.stdout], [], [], max(0.0, deadline - time.monotonic()))
        if not r:
            break
        b = os.read(p.stdout.fileno(), 1)
        if not b:
            break
        line += b
        if b == b"\n":
            m = re.search(rb"listening on (\S+):(\d+)", line)
            if m:
                return p, (m.group(1).decode(), int(m.group(2)))
            line = b""
    stop_proxy(p)
    errlog.close()
    with open(os.path.join(logdir, "proxy.stderr.log"), "rb") as f:
        err = f.read()[-2000:]
    raise SystemExit("proxy did not report 'listening on ADDR:PORT' (%s): %s\n%s" %
                     (" ".join(cmd), show(line), err.decode("latin-1")))


def stop_proxy(p):
    """SIGTERM, then SIGKILL after 10 s. Returns (exit status, killed)."""
    if p.poll() is not None:
        return p.returncode, False
    p.terminate()
    try:
        return p.wait(10), False
    except subprocess.TimeoutExpired:
        p.kill()
        return p.wait(5), True


def proxy_alive(proc, addr):
    if proc is not None:
        return proc.poll() is None
    try:
        socket.create_connection(addr, timeout=2).close()
        return True
    except OSError:
        return False


def run(args):
    selected = [c for c in CASES if not args.only or any(s in c.group + "/" + c.name for s in args.only)]
    if args.list:
        for c in selected:
            print("%-10s %-40s %s" % (c.group, c.name, c.doc.splitlines()[0] if c.doc else ""))
        return 0
    logdir = tempfile.mkdtemp(prefix="blackbox.")
    origin = Origin(args.origin_port or 0)
    proc = None
    if args.proxy_bin:
        proc, addr = start_proxy(args.proxy_bin, origin.port, args.proxy_args, logdir)
        name = args.name or os.path.basename(args.proxy_bin)
    else:
        host, port = args.proxy.rsplit(":", 1)
        addr = (host, int(port))
        name = args.name or args.proxy
    ctx = Ctx(addr, origin, name)
    results = []
    t_start = time.monotonic()
    crashed = False
    print("# blackbox: %s at %s:%d, origin 127.0.0.1:%d, %d cases" %
          (name, addr[0], addr[1], origin.port, len(selected)))
    try:
        for c in selected:
            ctx.case = origin.begin(c.name, serve_normal)
            t0 = time.monotonic()
            v = None
            if crashed:
                verdicts = [(k, (False, "proxy is not running any more")) for k in ("rfc", "policy")]
                x = None
            else:
                try:
                    v = c.fn(ctx)
                    x = v.x
                    verdicts = [(k, getattr(v, k)) for k in ("rfc", "policy") if getattr(v, k) is not None]
                except (OSError, AttributeError, IndexError, TypeError) as e:
                    x = None
                    verdicts = [("rfc", (False, "exception in case: %s: %s" %
                                         (e.__class__.__name__, e)))]
                    if args.verbose:
                        traceback.print_exc()
                finally:
                    if x is not None and x.client is not None:
                        x.client.close()
                    origin.end(ctx.case)
            dt = time.monotonic() - t0
            if not crashed and not proxy_alive(proc, addr):
                crashed = True
                verdicts = [(k, (False, "proxy died during this case")) for k, _ in verdicts]
            for kind, (passed, reason) in verdicts:
                res = {"name": c.name, "group": c.group, "kind": kind, "ok": bool(passed),
                       "reason": reason, "seconds": round(dt, 3)}
                if x is not None and (not passed or args.verbose):
                    res["detail"] = x.describe()
                results.append(res)
                print("%s  %-9s %-6s %-44s %s" % ("PASS" if passed else "FAIL", c.group, kind,
                                                  c.name, reason))
                if "detail" in res:
                    for line in res["detail"]:
                        print("        " + line)
            sys.stdout.flush()
    finally:
        if proc is not None:
            rc, killed = stop_proxy(proc)
            if not crashed and (not args.only or any(s in "robustness/clean_exit" for s in args.only)):
                passed = rc == 0 and not killed
                reason = ("exit status 0 after SIGTERM" if passed else
                          "killed: no exit 10s after SIGTERM" if killed else
                          "exit status %d after SIGTERM (see %s)" % (rc, os.path.join(logdir, "proxy.stderr.log")))
                results.append({"name": "clean_exit", "group": "robustness", "kind": "rfc",
                                "ok": passed, "reason": reason, "seconds": 0})
                print("%s  %-9s %-6s %-44s %s" % ("PASS" if passed else "FAIL", "robustness", "rfc",
                                                  "clean_exit", reason))
        origin.stop()
    total = time.monotonic() - t_start
    summary = {}
    for r in results:
        s = summary.setdefault("%s/%s" % (r["group"], r["kind"]), [0, 0])
        s[0 if r["ok"] else 1] += 1
    print("# summary (%s, %.1fs):" % (name, total))
    for k in sorted(summary):
        print("#   %-22s %3d pass %3d fail" % (k, summary[k][0], summary[k][1]))
    nfail = sum(1 for r in results if not r["ok"])
    if proc is not None and nfail:
        print("# %d verdicts, %d failed; proxy stderr kept in %s" % (len(results), nfail, logdir))
    else:
        print("# %d verdicts, %d failed" % (len(results), nfail))
        shutil.rmtree(logdir, ignore_errors=True)
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"proxy": name, "seconds": round(total, 2), "results": results}, f, indent=1)
    return 1 if nfail else 0


GROUPS = ["smuggling", "limits", "framing", "upstream", "client", "timeouts", "robustness"]


def table(specs, out=sys.stdout):
    """Markdown comparison of several --json files: name=path ..."""
    runs = []
    for spec in specs:
        name, path = spec.split("=", 1)
        with open(path) as f:
            runs.append((name, json.load(f)))
    w = out.write
    w("| group | kind | " + " | ".join(n for n, _ in runs) + " |\n")
    w("|---|---|" + "---|" * len(runs) + "\n")
    for kind in ("rfc", "policy"):
        for g in GROUPS + ["all"]:
            cells = []
            any_case = False
            for _, data in runs:
                rs = [r for r in data["results"] if r["kind"] == kind and (g == "all" or r["group"] == g)]
                if rs:
                    any_case = True
                p = sum(1 for r in rs if r["ok"])
                cells.append("%d/%d" % (p, len(rs)) if rs else "-")
            if any_case:
                label = "**all**" if g == "all" else g
                w("| %s | %s | %s |\n" % (label, kind, " | ".join(cells)))
    w("\n")
    for name, data in runs:
        fails = [r for r in data["results"] if not r["ok"]]
        w("### %s: %d of %d verdicts failed\n\n" % (name, len(fails), len(data["results"])))
        for r in fails:
            w("- `%s/%s` [%s]: %s\n" % (r["group"], r["name"], r["kind"], r["reason"].replace("|", "\\|")))
        w("\n")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = ap.add_mutually_exclusive_group()
    g.add_argument("--proxy-bin", help="proxy binary: started as BIN --listen 127.0.0.1:0 --upstream 127.0.0.1:ORIGIN [ARGS]")
    g.add_argument("--proxy", help="HOST:PORT of a running proxy that forwards to 127.0.0.1:--origin-port")
    g.add_argument("--table", nargs="+", metavar="NAME=JSON", help="print a markdown comparison of --json files")
    ap.add_argument("--origin-port", type=int, default=0, help="port of the suite's origin (with --proxy)")
    ap.add_argument("--proxy-args", default=None,
                    help="extra arguments for --proxy-bin (default: %s)" % " ".join(DEFAULT_PROXY_ARGS))
    ap.add_argument("--name", help="label for the proxy in the output")
    ap.add_argument("--json", help="write results as JSON to this file")
    ap.add_argument("--only", action="append", help="run cases whose group/name contains this (repeatable)")
    ap.add_argument("--list", action="store_true", help="list the cases and exit")
    ap.add_argument("-v", "--verbose", action="store_true", help="print the bytes of every case")
    args = ap.parse_args()
    if args.table:
        table(args.table)
        return 0
    args.proxy_args = DEFAULT_PROXY_ARGS if args.proxy_args is None else args.proxy_args.split()
    if not args.list and not args.proxy_bin and not args.proxy:
        ap.error("one of --proxy-bin or --proxy is required")
    if args.proxy and not args.origin_port:
        ap.error("--proxy needs --origin-port")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
