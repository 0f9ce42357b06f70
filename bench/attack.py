#!/usr/bin/env python3
"""A scripted attack mix against a plain-HTTP gateway on 127.0.0.1, for bench/footprint.sh:
what a flood of hostile clients leaves in the gateway's memory. Standard library only,
bounded in count and time; every socket is closed before it ends.

    attack.py PORT

Phases: HTTP/2 connections opening 100 streams each then vanishing; heads near the size
limit; forged tokens of 8 KiB; paths of 8 KiB; failed logins with 15 KB usernames;
silent connections (preface only) held for a second.
"""
import json
import os
import socket
import struct
import sys
import time

HOST = "127.0.0.1"
PORT = int(sys.argv[1])
DEADLINE = time.monotonic() + 240


def connect():
    s = socket.create_connection((HOST, PORT), timeout=5)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return s


def drain(s, limit=2.0):
    """Reads until the peer closes or is silent for `limit` seconds."""
    s.settimeout(limit)
    try:
        while s.recv(65536):
            pass
    except OSError:
        pass
    s.close()


def frame(kind, flags, stream, payload):
    return struct.pack(">I", len(payload))[1:] + bytes([kind, flags]) + struct.pack(">I", stream) + payload


def h2_streams(count):
    out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + frame(4, 0, 0, b"")
    for i in range(count):
        path = ("/public/" + os.urandom(8).hex()).encode()
        block = bytes([0x82, 0x86, 0x04, len(path)]) + path + bytes([0x01, 9]) + b"127.0.0.1"
        out += frame(1, 0x5, 2 * i + 1, block)
    return out


def http1(request_line, headers, body=b""):
    head = request_line + "\r\nHost: 127.0.0.1\r\n" + "".join(f"{k}: {v}\r\n" for k, v in headers)
    return head.encode() + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode() + body


def phase(name, count, make):
    started = time.monotonic()
    for i in range(count):
        if time.monotonic() > DEADLINE:
            break
        try:
            s = connect()
            s.sendall(make(i))
            drain(s, 0.5)
        except OSError:
            pass
    print(f"{name}: {count} in {time.monotonic() - started:.1f} s", flush=True)


phase("h2 100 streams then gone", 100, lambda i: h2_streams(100))
phase("heads of 30 KiB", 300, lambda i: http1("GET /public/x HTTP/1.1", [("X-Fill", "a" * 30000)]))
phase("forged 8 KiB tokens", 500, lambda i: http1("GET /private HTTP/1.1", [("Authorization", "Bearer " + os.urandom(3000).hex()[:8192])]))
phase("8 KiB paths", 500, lambda i: http1("GET /" + os.urandom(4096).hex() + " HTTP/1.1", []))
login = lambda i: http1(
    "POST /auth/login HTTP/1.1",
    [("Content-Type", "application/json")],
    json.dumps({"username": f"eve-{i}-" + "x" * 15000, "password": "wrong-password"}).encode(),
)
phase("failed logins, 15 KB names", 30, login)
silent = []
for _ in range(500):
    try:
        s = connect()
        s.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n")
        silent.append(s)
    except OSError:
        break
time.sleep(1)
for s in silent:
    s.close()
print(f"silent HTTP/2 connections held: {len(silent)}", flush=True)
