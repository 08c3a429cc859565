"""Shared Python side of the swarm protocol for the tests/ref/swarm_*.py scripts.

Independent of daemon/wire.c: proto/swarm.proto compiled with Debian's protoc
(--python_out) into a temporary directory, python3-protobuf to encode and
decode, python3-nacl (Ed25519) to sign and verify, hashlib.blake2b for the run
id and the join context (docs/protocol.md, "The envelope and its signature").

Also a minimal nng SP-over-TCP speaker (the wire format of nng's tcp
transport: an 8-byte handshake header "\\0SP\\0" + protocol id + 2 zero bytes
each way, then every message as an 8-byte big-endian length + payload), so a
test can play a hostile PUB (SpPub) and know exactly when a subscriber is
connected and what it was sent.

Not thread-safe; one test process uses it from its main thread.
"""
import hashlib
import os
import shutil
import socket
import struct
import subprocess
import sys
import tempfile

import nacl.signing

SOURCE = os.environ.get("SW_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
JOIN_CONTEXT = hashlib.blake2b(b"swarmtune.v1 join", digest_size=32).digest()
MAX_MSG = 2 << 20
NNG_TCP_FRAME = 8  # nng's tcp transport: 8-byte length before each message

_pb = None


def proto():
    """swarm_pb2, compiled once per process from proto/swarm.proto."""
    global _pb
    if _pb is not None:
        return _pb
    out = tempfile.mkdtemp(prefix="sw_wireutil_pb_")
    try:
        subprocess.run(["protoc", "--proto_path=" + os.path.join(SOURCE, "proto"),
                        "--python_out=" + out, "swarm.proto"], check=True, timeout=60)
        sys.path.insert(0, out)
        import swarm_pb2  # noqa: E402
        sys.path.remove(out)
    finally:
        # the module is loaded; its source is no longer needed
        shutil.rmtree(out, ignore_errors=True)
    _pb = swarm_pb2
    return _pb


def run_id_of(runspec_bytes):
    """The run id: BLAKE2b-256 of the canonical run spec bytes."""
    return hashlib.blake2b(runspec_bytes, digest_size=32).digest()


def read_runspec(state_dir):
    """(bytes, run id) of a node's runspec.json."""
    with open(os.path.join(state_dir, "runspec.json"), "rb") as f:
        data = f.read()
    return data, run_id_of(data)


def key(name=None):
    """An Ed25519 signing key: derived from name (reproducible) or fresh."""
    if name is None:
        return nacl.signing.SigningKey.generate()
    seed = hashlib.blake2b(b"swarmtune hostile test key: " + name.encode(), digest_size=32).digest()
    return nacl.signing.SigningKey(seed)


def pk(k):
    return bytes(k.verify_key)


def body_bytes(kind, msg):
    """A serialized Body holding msg in its oneof field `kind`."""
    pb = proto()
    body = pb.Body()
    getattr(body, kind).CopyFrom(msg)
    return body.SerializeToString()


def seal_raw(k, ctx_bytes, body, join=False, sender=None):
    """An Envelope over raw body bytes signed under ctx_bytes; sender
    overrides the sender field (the signature stays k's)."""
    pb = proto()
    sig = k.sign(ctx_bytes + body).signature
    env = pb.Envelope(sender=pk(k) if sender is None else sender, body=body, signature=sig,
                      context=pb.CONTEXT_JOIN if join else pb.CONTEXT_RUN)
    return env.SerializeToString()


def seal(k, run_id, kind, msg, join=False):
    """A signed Envelope: context JOIN (join=True) or the run id."""
    return seal_raw(k, JOIN_CONTEXT if join else run_id, body_bytes(kind, msg), join)


class Opened:
    """A verified envelope: sender, context ("run"/"join"), kind, msg, sizes."""

    def __init__(self, env, ctx, kind, msg, size):
        self.env, self.sender, self.ctx, self.kind, self.msg, self.size = (
            env, env.sender, ctx, kind, msg, size)


def open_envelope(data, run_id):
    """Parses and verifies one envelope (raises on any failure): Opened."""
    pb = proto()
    env = pb.Envelope.FromString(data)
    if len(env.sender) != 32 or len(env.signature) != 64:
        raise ValueError("sender %d bytes, signature %d bytes" % (len(env.sender),
                                                                   len(env.signature)))
    join = env.context == pb.CONTEXT_JOIN
    nacl.signing.VerifyKey(env.sender).verify((JOIN_CONTEXT if join else run_id) + env.body,
                                              env.signature)
    body = pb.Body.FromString(env.body)
    kind = body.WhichOneof("msg")
    if kind is None:
        raise ValueError("a Body with no message")
    return Opened(env, "join" if join else "run", kind, getattr(body, kind), len(data))


# ---------------------------------------------------------------- nng SP over TCP

SP_PUB0, SP_SUB0, SP_REQ0, SP_REP0 = 0x20, 0x21, 0x30, 0x31


def _sp_header(proto_id):
    return b"\x00SP\x00" + struct.pack(">H", proto_id) + b"\x00\x00"


def _recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("peer closed")
        buf += chunk
    return buf


class SpPub:
    """A pub0 listener on 127.0.0.1: accepts sub0 dialers and sends them
    framed messages.  Everything is bounded by explicit timeouts."""

    def __init__(self, port=0):
        self.lsock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.lsock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.lsock.bind(("127.0.0.1", port))
        self.lsock.listen(8)
        self.port = self.lsock.getsockname()[1]
        self.url = "tcp://127.0.0.1:%d" % self.port
        self.subs = []
        self.sent = 0

    def accept(self, timeout):
        """Waits up to timeout s for one more sub0 dialer; True when it connected
        and handshook as a subscriber."""
        self.lsock.settimeout(timeout)
        try:
            conn, _ = self.lsock.accept()
        except socket.timeout:
            return False
        conn.settimeout(10)
        try:
            conn.sendall(_sp_header(SP_PUB0))
            hdr = _recv_exact(conn, 8)
        except (OSError, ConnectionError):
            conn.close()
            return False
        if hdr != _sp_header(SP_SUB0):
            conn.close()
            return False
        self.subs.append(conn)
        return True

    def send(self, data):
        """Sends one message to every connected subscriber."""
        frame = struct.pack(">Q", len(data)) + data
        for c in list(self.subs):
            try:
                c.sendall(frame)
            except OSError:
                self.subs.remove(c)
                c.close()
        self.sent += 1

    def close(self):
        for c in self.subs:
            c.close()
        self.subs = []
        self.lsock.close()

