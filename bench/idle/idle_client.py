#!/usr/bin/env python3
"""Idle keep-alive connection client for bench/idle/run.sh.

    idle_client.py HOST PORT N PROTO PATH BODY [--concurrency C] [--open-timeout S] [--hold-timeout S] [--no-hold]

PROTO is h1 (HTTP/1.1), h1tls (HTTP/1.1 over TLS, ALPN http/1.1, the certificate not verified),
h2c (HTTP/2 with prior knowledge, raw frames: no h2 library needed) or h2tls (the same HTTP/2
frames over TLS, ALPN h2).
Opens N connections to HOST:PORT, at most C of them in progress at a time, sends one GET PATH on
each (HTTP/1.1 keep-alive, or the HTTP/2 preface + SETTINGS + one HEADERS frame), reads the whole
response and checks it is a 200 whose body is exactly BODY. A connection whose response is
complete is left open and idle: nothing more is sent on it.

Then it prints one line and waits for signals (up to --hold-timeout seconds in all):

    ready ok=N fail=F [reason=count ...]          all N answered (F > 0: see the reasons)
    SIGUSR1 -> check: every held connection is polled without blocking; one the server closed
               (EOF, reset, GOAWAY) or that received unexpected bytes counts as lost:
    alive A lost L [reason=count ...]
    SIGUSR1 -> close: every connection is closed (FIN); prints "closed" and exits 0
    SIGTERM / SIGINT or the hold timeout -> close everything and exit 1
With --no-hold it closes everything right after "ready" (the warm-up).

Exit status: 0 after "closed", 2 when fewer than N responses were good (after "ready"), 1 otherwise.
"""
import argparse
import collections
import errno
import os
import selectors
import signal
import socket
import ssl
import struct
import sys
import time

# HTTP/2 frame types
DATA, HEADERS, RST_STREAM, SETTINGS, PING, GOAWAY, CONTINUATION = 0, 1, 3, 4, 6, 7, 9
END_STREAM, ACK, END_HEADERS, PADDED, PRIORITY = 0x1, 0x1, 0x4, 0x8, 0x20
PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


def frame(ftype, flags, stream, payload=b""):
    return struct.pack(">I", len(payload))[1:] + bytes([ftype, flags]) + struct.pack(">I", stream) + payload


def hpack_literal(name_index, value):
    # literal header field without indexing, indexed name, plain (non-Huffman) value
    v = value.encode()
    assert name_index < 15 and len(v) < 127
    return bytes([name_index, len(v)]) + v


def h2_request(host, port, path):
    block = (
        b"\x82"  # :method GET (static index 2)
        + b"\x86"  # :scheme http (static index 6)
        + hpack_literal(4, path)  # :path
        + hpack_literal(1, f"{host}:{port}")  # :authority
    )
    return PREFACE + frame(SETTINGS, 0, 0) + frame(HEADERS, END_STREAM | END_HEADERS, 1, block)


def h2_status(block):
    """The :status of a response header block, from its first field; None if not decodable here."""
    if not block:
        return None
    b = block[0]
    static = {0x88: 200, 0x89: 204, 0x8A: 206, 0x8B: 304, 0x8C: 400, 0x8D: 404, 0x8E: 500}
    if b in static:
        return static[b]
    # literal with the name :status (static index 8..14), plain value
    # (not indexed 0x08.., never indexed 0x18.., incrementally indexed 0x48..)
    if 0x08 <= b <= 0x0E or 0x18 <= b <= 0x1E or 0x48 <= b <= 0x4E:
        if len(block) >= 2 and not block[1] & 0x80:
            n = block[1] & 0x7F
            try:
                return int(block[2 : 2 + n].decode())
            except ValueError:
                return None
    return None


class Conn:
    __slots__ = ("sock", "state", "buf", "out", "body", "status", "hdr_block", "t0")

    def __init__(self, sock):
        self.sock = sock
        self.state = "connect"
        self.buf = bytearray()
        self.out = b""
        self.body = bytearray()
        self.status = None
        self.hdr_block = bytearray()
        self.t0 = time.monotonic()


class Fail(Exception):
    pass


def parse_h1(c, want_body):
    """True when the response is complete and good; raises Fail on a bad one; False: need more."""
    end = c.buf.find(b"\r\n\r\n")
    if end < 0:
        if len(c.buf) > 65536:
            raise Fail("h1-header-too-long")
        return False
    head = bytes(c.buf[:end]).decode("latin-1").split("\r\n")
    parts = head[0].split(" ", 2)
    if len(parts) < 2 or not parts[0].startswith("HTTP/1."):
        raise Fail("h1-bad-status-line")
    if parts[1] != "200":
        raise Fail("status-" + parts[1])
    length, chunked, close = None, False, parts[0] == "HTTP/1.0"
    for line in head[1:]:
        k, _, v = line.partition(":")
        k, v = k.strip().lower(), v.strip().lower()
        if k == "content-length":
            length = int(v)
        elif k == "transfer-encoding" and "chunked" in v:
            chunked = True
        elif k == "connection":
            if "close" in v:
                close = True
            elif "keep-alive" in v:
                close = False
    rest = bytes(c.buf[end + 4 :])
    if chunked:
        body, pos = bytearray(), 0
        while True:
            eol = rest.find(b"\r\n", pos)
            if eol < 0:
                return False
            size = int(rest[pos:eol].split(b";")[0], 16)
            if size == 0:
                if rest.find(b"\r\n\r\n", eol) < 0:  # the (empty) trailer section ends here
                    return False
                break
            if len(rest) < eol + 2 + size + 2:
                return False
            body += rest[eol + 2 : eol + 2 + size]
            pos = eol + 2 + size + 2
    elif length is not None:
        if len(rest) < length:
            return False
        if len(rest) > length:
            raise Fail("h1-extra-bytes")
        body = rest[:length]
    else:
        raise Fail("h1-no-length")  # the body would end at close: not a keep-alive response
    if close:
        raise Fail("h1-connection-close")
    if bytes(body) != want_body:
        raise Fail("body-mismatch")
    return True


def parse_h2(c, want_body, replies):
    """Consumes whole frames from c.buf. True when stream 1 ended well; raises Fail; False: more."""
    done = False
    while len(c.buf) >= 9:
        length = int.from_bytes(c.buf[0:3], "big")
        if len(c.buf) < 9 + length:
            break
        ftype, flags = c.buf[3], c.buf[4]
        stream = int.from_bytes(c.buf[5:9], "big") & 0x7FFFFFFF
        payload = bytes(c.buf[9 : 9 + length])
        del c.buf[: 9 + length]
        if ftype == SETTINGS:
            if not flags & ACK:
                replies.append(frame(SETTINGS, ACK, 0))
        elif ftype == PING:
            if not flags & ACK:
                replies.append(frame(PING, ACK, 0, payload))
        elif ftype == GOAWAY:
            code = int.from_bytes(payload[4:8], "big") if len(payload) >= 8 else -1
            raise Fail(f"h2-goaway-{code}")
        elif stream == 1 and ftype == RST_STREAM:
            raise Fail("h2-rst-stream")
        elif stream == 1 and ftype in (HEADERS, CONTINUATION):
            p = payload
            if ftype == HEADERS:
                pad = 0
                if flags & PADDED:
                    pad, p = p[0], p[1:]
                if flags & PRIORITY:
                    p = p[5:]
                p = p[: len(p) - pad]
            if c.status is None:
                c.hdr_block += p
                if flags & END_HEADERS or ftype == HEADERS:
                    c.status = h2_status(bytes(c.hdr_block))
                    if c.status is None:
                        raise Fail("h2-status-not-decoded-" + bytes(c.hdr_block[:4]).hex())
                    if c.status != 200:
                        raise Fail(f"status-{c.status}")
            if ftype == HEADERS and flags & END_STREAM:
                done = True
        elif stream == 1 and ftype == DATA:
            p = payload
            if flags & PADDED:
                p = p[1 : len(p) - p[0]]
            c.body += p
            if flags & END_STREAM:
                done = True
    if done:
        if c.status != 200:
            raise Fail("h2-no-status")
        if bytes(c.body) != want_body:
            raise Fail("body-mismatch")
    return done


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("host")
    ap.add_argument("port", type=int)
    ap.add_argument("n", type=int)
    ap.add_argument("proto", choices=["h1", "h1tls", "h2c", "h2tls"])
    ap.add_argument("path")
    ap.add_argument("body")
    ap.add_argument("--concurrency", type=int, default=16)
    ap.add_argument("--open-timeout", type=float, default=120.0)
    ap.add_argument("--hold-timeout", type=float, default=600.0)
    ap.add_argument("--no-hold", action="store_true", help="close everything right after 'ready' (warm-up)")
    a = ap.parse_args()
    want_body = a.body.encode()
    tls = None
    h2 = a.proto in ("h2c", "h2tls")
    if a.proto in ("h1tls", "h2tls"):
        tls = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        tls.check_hostname = False
        tls.verify_mode = ssl.CERT_NONE
        tls.set_alpn_protocols(["h2" if h2 else "http/1.1"])
    if not h2:
        request = f"GET {a.path} HTTP/1.1\r\nHost: {a.host}:{a.port}\r\nUser-Agent: portico-idle-bench\r\n\r\n".encode()
    else:
        request = h2_request(a.host, a.port, a.path)

    # Signals are taken synchronously with sigtimedwait: block them from the start.
    sigs = {signal.SIGUSR1, signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, sigs)

    sel = selectors.DefaultSelector()
    held = []  # sockets whose response was complete and good
    fails = collections.Counter()
    started = active = 0
    deadline = time.monotonic() + a.open_timeout

    def finish(c, reason=None):
        nonlocal active
        active -= 1
        sel.unregister(c.sock)
        if reason is None:
            held.append(c.sock)
        else:
            fails[reason] += 1
            c.sock.close()

    while len(held) + sum(fails.values()) < a.n:
        now = time.monotonic()
        if now > deadline:
            for key in list(sel.get_map().values()):
                finish(key.data, "timeout-" + key.data.state)
            fails["not-started"] += a.n - started
            break
        while started < a.n and active < a.concurrency:
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            started += 1
            err = s.connect_ex((a.host, a.port))
            if err not in (0, errno.EINPROGRESS):
                fails["connect-" + errno.errorcode.get(err, str(err))] += 1
                s.close()
                continue
            c = Conn(s)
            active += 1
            sel.register(s, selectors.EVENT_WRITE, c)
        for key, ev in sel.select(timeout=min(1.0, max(0.0, deadline - now))):
            c = key.data
            try:
                if c.state == "connect":
                    err = c.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                    if err:
                        raise Fail("connect-" + errno.errorcode.get(err, str(err)))
                    c.out = request
                    c.state = "send"
                    if tls:
                        sel.unregister(c.sock)
                        c.sock = tls.wrap_socket(c.sock, do_handshake_on_connect=False)
                        sel.register(c.sock, selectors.EVENT_WRITE, c)
                        c.state = "handshake"
                if c.state == "handshake":
                    try:
                        c.sock.do_handshake()
                    except ssl.SSLWantReadError:
                        sel.modify(c.sock, selectors.EVENT_READ, c)
                        continue
                    except ssl.SSLWantWriteError:
                        sel.modify(c.sock, selectors.EVENT_WRITE, c)
                        continue
                    if h2 and c.sock.selected_alpn_protocol() != "h2":
                        raise Fail("no-alpn-h2")
                    c.state = "send"
                    sel.modify(c.sock, selectors.EVENT_WRITE, c)
                if c.state == "send":
                    if c.out:
                        c.out = c.out[c.sock.send(c.out) :]
                    if not c.out:
                        c.state = "response"
                        sel.modify(c.sock, selectors.EVENT_READ, c)
                    continue
                data = c.sock.recv(65536)
                if not data:
                    raise Fail("closed-before-response" if not c.buf else "closed-during-response")
                c.buf += data
                while tls and c.sock.pending():
                    c.buf += c.sock.recv(65536)
                if not h2:
                    ok = parse_h1(c, want_body)
                else:
                    replies = []
                    ok = parse_h2(c, want_body, replies)
                    if replies:
                        c.sock.sendall(b"".join(replies))  # a few bytes: the socket buffer takes them
                if ok:
                    finish(c)
            except Fail as e:
                finish(c, str(e))
            except ConnectionResetError:
                finish(c, "reset")
            except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                pass
            except ssl.SSLError as e:
                finish(c, "tls-" + (e.reason or type(e).__name__))
            except OSError as e:
                finish(c, "oserror-" + errno.errorcode.get(e.errno, str(e.errno)))
            except (ValueError, IndexError) as e:
                finish(c, "parse-error-" + type(e).__name__)
    sel.close()

    def reasons(counter):
        return "".join(f" {k}={v}" for k, v in sorted(counter.items()))

    nfail = sum(fails.values())
    print(f"ready ok={len(held)} fail={nfail}{reasons(fails)}", flush=True)
    if a.no_hold:
        for s in held:
            s.close()
        return 0 if nfail == 0 else 2
    hold_deadline = time.monotonic() + a.hold_timeout
    rc = 1
    phase = "check"
    while True:
        left = hold_deadline - time.monotonic()
        info = signal.sigtimedwait(sigs, left) if left > 0 else None
        if info is None or info.si_signo != signal.SIGUSR1:
            print("aborted: " + ("hold timeout" if info is None else signal.Signals(info.si_signo).name), flush=True)
            break
        if phase == "check":
            lost = collections.Counter()
            sel = selectors.DefaultSelector()
            for s in held:
                sel.register(s, selectors.EVENT_READ)
            for key, _ in sel.select(timeout=0):
                s = key.fileobj
                try:
                    data = s.recv(65536)
                    if not data:
                        lost["closed-by-server"] += 1
                    elif h2:
                        c = Conn(s)
                        c.status = 200  # stream 1 is done: only connection-level frames may come
                        c.buf += data
                        try:
                            replies = []
                            parse_h2(c, b"", replies)
                        except Fail as e:
                            lost[str(e)] += 1
                    else:
                        lost["unexpected-bytes"] += 1
                except (BlockingIOError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
                    pass  # nothing for us (a TLS 1.3 session ticket is taken by the TLS layer)
                except (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError):
                    lost["reset"] += 1
                except OSError as e:
                    lost["oserror-" + errno.errorcode.get(e.errno, str(e.errno))] += 1
            sel.close()
            nlost = sum(lost.values())
            print(f"alive {len(held) - nlost} lost {nlost}{reasons(lost)}", flush=True)
            phase = "close"
        else:
            for s in held:
                s.close()
            held = []
            print("closed", flush=True)
            rc = 0 if nfail == 0 else 2
            break
    for s in held:
        s.close()
    return rc


if __name__ == "__main__":
    sys.exit(main())
