"""wire_reference: daemon/wire.c against Python protobuf and PyNaCl.

Independent side: proto/swarm.proto compiled with Debian's protoc
(--python_out), decoded with python3-protobuf; signatures made and checked
with python3-nacl (libsodium through its own binding, but a separate
encoder, context derivation and framing); digests with hashlib.blake2b.

1. `wire_sample seal DIR` (tests/tools/wire_sample.c) seals one envelope of
   every message type with a fresh key.  Each must parse as an Envelope,
   verify as Ed25519(context || body) under the sender key derived from the
   written seed, parse as a Body holding the expected message, re-serialize
   to the same bytes, and hold the field values in the manifest.
2. Envelopes built here (signed with nacl) must open with `wire_sample open`
   to the same values; under another run id they are bad_signature; bodies
   signed correctly but out of bounds get the drop reason docs/protocol.md
   gives.
Exits non-zero on any mismatch.
"""

import hashlib
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import nacl.signing
from nacl.exceptions import BadSignatureError

SRC = os.environ.get("SW_SOURCE_ROOT", os.path.join(os.path.dirname(__file__), "..", ".."))
BUILD = os.environ.get("SW_BUILD_ROOT", "build")
SAMPLE = os.path.join(BUILD, "tests", "wire_sample")
JOIN_CONTEXT = hashlib.blake2b(b"swarmtune.v1 join", digest_size=32).digest()
MAX_MSG = 2 << 20

failures = []


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if not ok:
        failures.append(what)


def compile_proto(tmp):
    out = os.path.join(tmp, "py")
    os.mkdir(out)
    subprocess.run(["protoc", "--proto_path=" + os.path.join(SRC, "proto"),
                    "--python_out=" + out, "swarm.proto"], check=True)
    sys.path.insert(0, out)
    import swarm_pb2  # noqa: E402

    return swarm_pb2


def f32(x):
    """IEEE-754 bits as wire_sample prints them, NaN folded to one value."""
    bits = struct.pack(">f", x).hex()
    return "nan" if x != x else bits


def norm(fields):
    """Folds every NaN float of a wire_sample dict (keys scale and loss)."""
    out = dict(fields)
    for k in ("scale", "loss"):
        if k in out:
            v = struct.unpack(">f", bytes.fromhex(out[k]))[0] if out[k] != "nan" else None
            out[k] = "nan" if v is None or v != v else out[k]
    return out


def vv(entries):
    return [{"origin": e.origin.hex(), "count": str(e.count)} for e in entries]


def members(ms):
    return [{"id": m.id.hex(), "pub_addr": m.pub_addr, "sync_addr": m.sync_addr,
             "alive": m.alive} for m in ms]


def fields_of(kind, m):
    """A decoded protobuf message in wire_sample's JSON encoding."""
    if kind == "batch":
        return {"first_step": str(m.first_step), "scale": f32(m.scale),
                "q": [b - 256 if b > 127 else b for b in m.q]}
    if kind == "announce":
        return {"seq": str(m.seq), "pub_addr": m.pub_addr, "sync_addr": m.sync_addr,
                "state": int(m.state), "step": str(m.step), "vv": vv(m.vv),
                "ledger_updates": str(m.ledger_updates),
                "digest": m.digest.hex() if m.digest else None,
                "digest_vv": vv(m.digest_vv), "members": members(m.members), "loss": f32(m.loss)}
    if kind == "hello":
        return {"pub_addr": m.pub_addr, "sync_addr": m.sync_addr}
    if kind == "welcome":
        return {"run_spec": m.run_spec.hex(), "members": members(m.members), "vv": vv(m.vv),
                "ledger_updates": str(m.ledger_updates),
                "snapshot_updates": str(m.snapshot_updates),
                "snapshot_bytes": str(m.snapshot_bytes)}
    if kind == "get_updates":
        return {"origin": m.origin.hex(), "first_step": str(m.first_step),
                "max_steps": m.max_steps}
    if kind == "updates":
        return {"batches": [b.hex() for b in m.batches]}
    if kind == "get_snapshot":
        return {"snapshot_updates": str(m.snapshot_updates), "chunk": m.chunk}
    if kind == "snapshot_chunk":
        return {"snapshot_updates": str(m.snapshot_updates), "chunk": m.chunk,
                "n_chunks": m.n_chunks, "total_bytes": str(m.total_bytes), "data": m.data.hex()}
    if kind == "leave":
        return {}
    if kind == "error":
        return {"code": int(m.code), "message": m.message}
    raise ValueError(kind)


def decode(pb, data, run_id):
    """Python's reading of an envelope: (sender, context name, kind, message, body bytes)."""
    env = pb.Envelope.FromString(data)
    ctx = JOIN_CONTEXT if env.context == pb.CONTEXT_JOIN else run_id
    nacl.signing.VerifyKey(env.sender).verify(ctx + env.body, env.signature)
    body = pb.Body.FromString(env.body)
    kind = body.WhichOneof("msg")
    return env, ("join" if env.context == pb.CONTEXT_JOIN else "run"), kind, getattr(body, kind)


def check_c_samples(pb, tmp):
    d = os.path.join(tmp, "c")
    os.mkdir(d)
    subprocess.run([SAMPLE, "seal", d], check=True)
    with open(os.path.join(d, "manifest.json")) as f:
        manifest = json.load(f)
    with open(os.path.join(d, "seed"), "rb") as f:
        seed = f.read()
    pk = nacl.signing.SigningKey(seed).verify_key.encode()
    run_id = bytes.fromhex(manifest["run_id"])
    check(pk.hex() == manifest["pk"], "the seed's public key is the manifest's pk")
    kinds = set()
    by_file = {}
    for s in manifest["samples"]:
        with open(os.path.join(d, s["file"]), "rb") as f:
            data = f.read()
        by_file[s["file"]] = data
        name = s["file"]
        try:
            env, ctx, kind, msg = decode(pb, data, run_id)
        except BadSignatureError:
            check(False, "%s: signature verifies" % name)
            continue
        kinds.add(kind)
        check(len(data) == s["bytes"] and env.sender == pk and len(env.signature) == 64,
              "%s: %d bytes, sender is pk, 64-byte signature" % (name, len(data)))
        check(ctx == s["context"] and kind == s["type"],
              "%s: %s in the %s context" % (name, kind, ctx))
        check(env.SerializeToString() == data and
              pb.Body.FromString(env.body).SerializeToString() == env.body,
              "%s: Python re-serializes envelope and body to the same bytes" % name)
        check(norm(fields_of(kind, msg)) == norm(s["fields"]),
              "%s: every field equals the manifest" % name)
        if kind == "snapshot_chunk":
            check(msg.digest == hashlib.blake2b(msg.data, digest_size=32).digest(),
                  "%s: digest is BLAKE2b-256 of %d data bytes" % (name, len(msg.data)))
        if kind == "updates":
            inner = [decode(pb, b, run_id) for b in msg.batches]
            check(all(k == "batch" and e.sender == pk for e, _, k, _ in inner) and
                  msg.batches[0] == by_file.get("00_batch.bin"),
                  "%s: holds %d verbatim batch envelopes that verify" % (name, len(inner)))
        if name == "00_batch.bin":
            per = (len(data) + 8) / len(msg.q)
            check(per < 3, "%s: %d steps at first_step %d cost %.3f bytes/update with nng's "
                  "8-byte frame" % (name, len(msg.q), msg.first_step, per))
    every = {"batch", "announce", "hello", "welcome", "get_updates", "updates", "get_snapshot",
             "snapshot_chunk", "leave", "error"}
    check(kinds == every, "C samples cover every message type (%d)" % len(every))
    # another run id: Python refuses the C signature too
    try:
        decode(pb, by_file["00_batch.bin"], bytes(32))
        check(False, "a C batch does not verify under another run id in Python")
    except BadSignatureError:
        check(True, "a C batch does not verify under another run id in Python")


def open_c(tmp, run_id, data):
    path = os.path.join(tmp, "py.bin")
    with open(path, "wb") as f:
        f.write(data)
    r = subprocess.run([SAMPLE, "open", run_id.hex() if run_id else "none", path],
                       capture_output=True, text=True)
    if r.returncode not in (0, 1):
        raise SystemExit("wire_sample open failed: %s" % r.stderr)
    return json.loads(r.stdout)


def seal_py(pb, key, run_id, kind, msg, join=False):
    body = pb.Body()
    getattr(body, kind).CopyFrom(msg)
    raw = body.SerializeToString()
    ctx = JOIN_CONTEXT if join else run_id
    sig = key.sign(ctx + raw).signature
    env = pb.Envelope(sender=key.verify_key.encode(), body=raw, signature=sig,
                      context=pb.CONTEXT_JOIN if join else pb.CONTEXT_RUN)
    return env.SerializeToString()


def py_messages(pb, key, run_id):
    """(kind, message, join) for every type, values chosen here."""
    rnd = os.urandom
    out = []
    out.append(("batch", pb.UpdateBatch(first_step=(1 << 50) + 3, scale=0.015625,
                                        q=bytes([0x81, 0x7f, 0, 1, 0xff] * 13)), False))
    ann = pb.Announce(seq=(1 << 63) + 5, pub_addr="tcp://198.51.100.7:7701",
                      sync_addr="tcp://h\u00f4te:7702", state=pb.NODE_STATE_DONE, step=77,
                      ledger_updates=1 << 40, digest=rnd(32), loss=float("nan"))
    for i in range(7):
        ann.vv.add(origin=rnd(32), count=i * 999)
    ann.digest_vv.add(origin=rnd(32), count=(1 << 64) - 1)
    for i in range(4):
        ann.members.add(id=rnd(32), pub_addr="ipc:///tmp/p%d" % i, sync_addr="", alive=i % 2 == 0)
    out.append(("announce", ann, False))
    out.append(("hello", pb.Hello(pub_addr="tcp://[2001:db8::1]:7701", sync_addr="x" * 256),
                True))
    wel = pb.Welcome(run_spec=b'{"format":1}', ledger_updates=12, snapshot_updates=0,
                     snapshot_bytes=0)
    wel.members.add(id=rnd(32), pub_addr="tcp://a:1", sync_addr="tcp://a:2", alive=True)
    wel.vv.add(origin=rnd(32), count=12)
    out.append(("welcome", wel, True))
    out.append(("get_updates", pb.GetUpdates(origin=rnd(32), first_step=128, max_steps=1 << 31),
                False))
    batches = [seal_py(pb, key, run_id, "batch",
                       pb.UpdateBatch(first_step=64 * i, scale=0.5, q=bytes([i + 1] * 64)))
               for i in range(3)]
    out.append(("updates", pb.Updates(batches=batches), False))
    out.append(("get_snapshot", pb.GetSnapshot(snapshot_updates=4096, chunk=9), False))
    data = rnd(5000)
    out.append(("snapshot_chunk", pb.SnapshotChunk(
        snapshot_updates=4096, chunk=0, n_chunks=2, total_bytes=9000, data=data,
        digest=hashlib.blake2b(data, digest_size=32).digest()), False))
    out.append(("leave", pb.Leave(), False))
    out.append(("error", pb.Error(code=pb.ERROR_BUSY, message="slow down \u2013 later"), True))
    out.append(("error", pb.Error(code=pb.ERROR_BAD_REQUEST, message=""), False))
    return out


def check_py_envelopes(pb, tmp):
    key = nacl.signing.SigningKey.generate()
    pk = key.verify_key.encode().hex()
    run_id, other = os.urandom(32), os.urandom(32)
    for kind, msg, join in py_messages(pb, key, run_id):
        data = seal_py(pb, key, run_id, kind, msg, join)
        got = open_c(tmp, run_id, data)
        want = fields_of(kind, type(msg).FromString(msg.SerializeToString()))
        ctx = "join" if join else "run"
        check(got.get("ok") and got["type"] == kind and got["context"] == ctx and
              got["sender"] == pk and norm(got["fields"]) == norm(want),
              "Python %s (%s context, %d bytes): wire_sample opens it to the same values"
              % (kind, ctx, len(data)))
        if kind == "updates":
            inner = [open_c(tmp, run_id, b) for b in msg.batches]
            check(all(r.get("ok") and r["type"] == "batch" for r in inner),
                  "its %d inner Python batches open one by one" % len(inner))
        if not join:
            check(open_c(tmp, other, data) == {"ok": False, "drop": "bad_signature"},
                  "Python %s under another run id: bad_signature" % kind)
            check(open_c(tmp, None, data) == {"ok": False, "drop": "bad_signature"},
                  "Python %s with no run id (a joiner): bad_signature" % kind)
        else:
            check(open_c(tmp, None, data).get("ok") is True,
                  "Python %s opens with no run id (join context)" % kind)

    # correctly signed, but refused for what is in them
    def drop_of(kind, msg, join=False):
        return open_c(tmp, run_id, seal_py(pb, key, run_id, kind, msg, join)).get("drop")

    cases = [
        ("q byte -128", "batch", pb.UpdateBatch(scale=1, q=b"\x01\x80"), False, "bad_field"),
        ("1025 steps", "batch", pb.UpdateBatch(scale=1, q=bytes(1025)), False, "bad_field"),
        ("empty q", "batch", pb.UpdateBatch(scale=1), False, "bad_field"),
        ("scale 0", "batch", pb.UpdateBatch(scale=0, q=b"\x01"), False, "bad_field"),
        ("scale inf", "batch", pb.UpdateBatch(scale=float("inf"), q=b"\x01"), False, "bad_field"),
        ("NUL in an address", "hello", pb.Hello(pub_addr="tcp://a\x00b:1"), True, "bad_field"),
        ("257-byte address", "hello", pb.Hello(sync_addr="y" * 257), True, "bad_field"),
        ("31-byte member id", "announce", pb.Announce(members=[pb.Member(id=bytes(31))]), False,
         "bad_field"),
        ("state 9", "announce", pb.Announce(state=9), False, "bad_field"),
        ("4097 vv entries", "announce",
         pb.Announce(vv=[pb.VersionEntry(origin=bytes(32))] * 4097), False, "bad_field"),
        ("chunk digest of other data", "snapshot_chunk",
         pb.SnapshotChunk(n_chunks=1, data=b"abc",
                          digest=hashlib.blake2b(b"abd", digest_size=32).digest()),
         False, "bad_field"),
        ("empty run spec", "welcome", pb.Welcome(), True, "bad_field"),
        ("error code 7", "error", pb.Error(code=7), False, "bad_field"),
        ("hello in the run context", "hello", pb.Hello(), False, "wrong_context"),
        ("welcome in the run context", "welcome", pb.Welcome(run_spec=b"{}"), False,
         "wrong_context"),
        ("batch in the join context", "batch", pb.UpdateBatch(scale=1, q=b"\x01"), True,
         "wrong_context"),
    ]
    for what, kind, msg, join, want in cases:
        got = drop_of(kind, msg, join)
        check(got == want, "Python %s: %s (got %s)" % (what, want, got))
    empty = pb.Body().SerializeToString()
    env = pb.Envelope(sender=key.verify_key.encode(), body=empty,
                      signature=key.sign(run_id + empty).signature).SerializeToString()
    check(open_c(tmp, run_id, env).get("drop") == "malformed", "a Body with no message: malformed")
    check(open_c(tmp, run_id, b"\xff" * 40).get("drop") == "malformed", "garbage: malformed")
    check(open_c(tmp, run_id, bytes(MAX_MSG + 1)).get("drop") == "oversize",
          "%d bytes: oversize" % (MAX_MSG + 1))


def main():
    tmp = tempfile.mkdtemp(prefix="wire_reference_")
    try:
        pb = compile_proto(tmp)
        check_c_samples(pb, tmp)
        check_py_envelopes(pb, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("%d checks FAILED" % len(failures))
        return 1
    print("all wire checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
