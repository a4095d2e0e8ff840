#!/usr/bin/env python3
# A hostile client of tesserad's XEMEM socket, for tests/integration/xemem.sh:
# malformed frames and requests, lying descriptors, agents that never answer
# or lie.  Every one must get an error reply (or a closed connection), never
# a success, and the daemon must keep answering.  Prints TAP without numbers
# ("ok - ..."); the suite numbers the lines.
#
#   hostile-client.py SOCKET
import array
import errno
import fcntl
import json
import os
import socket
import struct
import sys
import threading
import time

SOCK = sys.argv[1]
PAGE = os.sysconf("SC_PAGE_SIZE")
MAX_FRAME = 16 << 20
count = 0


def ok(cond, desc):
    global count
    count += 1
    print(("ok" if cond else "not ok") + " - " + desc.replace("#", " "), flush=True)
    return cond


def diag(msg):
    print("# " + msg.replace("\n", " "), flush=True)


def connect():
    s = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    s.settimeout(5)
    s.connect(SOCK)
    return s


def send_frame(s, payload, fds=()):
    data = struct.pack("<I", len(payload)) + payload
    if fds:
        s.sendmsg([data], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", fds))])
    else:
        s.sendall(data)


def recv_exact(s, n):
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def recv_frame(s):
    """(reply or None when the connection closed, descriptors that came with it)"""
    fds = []
    try:
        msg, anc, _, _ = s.recvmsg(4, socket.CMSG_SPACE(64 * 4))
        for level, kind, data in anc:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                a = array.array("i")
                a.frombytes(data[: len(data) - len(data) % a.itemsize])
                fds.extend(a)
        if not msg:
            return None, fds
        rest = recv_exact(s, 4 - len(msg)) if len(msg) < 4 else b""
        if rest is None:
            return None, fds
        (n,) = struct.unpack("<I", msg + rest)
        body = recv_exact(s, n)
        return (json.loads(body) if body is not None else None), fds
    except (ConnectionResetError, BrokenPipeError, socket.timeout):
        return None, fds


def raw(payload, fds=()):
    """One frame on a new connection: the reply (None: closed), received descriptors closed."""
    s = connect()
    try:
        send_frame(s, payload, fds)
        reply, got = recv_frame(s)
        for fd in got:
            os.close(fd)
        return reply
    finally:
        s.close()


def req(op, **args):
    return dict(version=1, op=op, **args)


def call(obj, fds=()):
    return raw(json.dumps(obj).encode(), fds)


def describe(reply):
    if reply is None:
        return "connection closed"
    if reply.get("ok"):
        return "SUCCESS: " + json.dumps(reply.get("result"))[:80]
    return "errno %s: %s" % (reply.get("errno"), str(reply.get("error"))[:100])


def refused(desc, reply, want=None):
    """An error reply (with errno `want` if given) or a closed connection."""
    good = reply is None or (reply.get("ok") is False and (want is None or reply.get("errno") == want))
    return ok(good, "%s: refused (%s)" % (desc, describe(reply)))


def answered():
    r = call(req("xemem_lookup", name="hostile-probe-%d" % os.getpid()))
    return r is not None and r.get("errno") == errno.ENOENT


# ---- malformed requests ----

E = errno
cases = [
    ("lookup: a number as the name", req("xemem_lookup", name=5), E.EINVAL),
    ("lookup: a control character in the name", req("xemem_lookup", name="a\x01b"), E.EINVAL),
    ("lookup: a newline in the name", req("xemem_lookup", name="a\nb"), E.EINVAL),
    ("lookup: DEL in the name", req("xemem_lookup", name="a\x7fb"), E.EINVAL),
    ("lookup: a name of 100000 characters", req("xemem_lookup", name="x" * 100000), E.EINVAL),
    ("lookup: a non-ASCII name", req("xemem_lookup", name="caf\u00e9"), E.EINVAL),
    ("lookup: no name", req("xemem_lookup"), E.EINVAL),
    ("get: segid -1", req("xemem_get", segid=-1, flags=1), E.EINVAL),
    ("get: segid 2^63-1", req("xemem_get", segid=2**63 - 1, flags=1), E.ENOENT),
    ("get: segid as a string", req("xemem_get", segid="1", flags=1), E.EINVAL),
    ("get: segid 1.5", req("xemem_get", segid=1.5, flags=1), E.EINVAL),
    ("get: flags 2^40", req("xemem_get", segid=1, flags=2**40), E.EINVAL),
    ("get: flags null", req("xemem_get", segid=1, flags=None), E.EINVAL),
    ("attach: apid -5", req("xemem_attach", apid=-5, offset=0, size=1), E.EINVAL),
    ("attach: offset -1", req("xemem_attach", apid=1, offset=-1, size=1), E.EINVAL),
    ("attach: size 2^62", req("xemem_attach", apid=1, offset=0, size=2**62), E.EINVAL),
    ("attach: offset 2^63-1", req("xemem_attach", apid=1, offset=2**63 - 1, size=1), E.EINVAL),
    ("attach: an array as the apid", req("xemem_attach", apid=[1], offset=0, size=1), E.EINVAL),
    ("detach: attachment 'x'", req("xemem_detach", attachment="x"), E.EINVAL),
    ("release: apid null", req("xemem_release", apid=None), E.EINVAL),
    ("remove: segid 0", req("xemem_remove", segid=0), E.EINVAL),
    ("snapshot: a segment nobody has", req("xemem_snapshot", segid=2**62), E.ENOENT),
    ("ready: a segment nobody has", req("xemem_ready", segid=2**62), E.ENOENT),
    ("make: size -4096", req("xemem_make", kind="range", mode=0o600, addr=0, size=-4096, pieces=[]), E.EINVAL),
    ("make: size 2^62", req("xemem_make", kind="range", mode=0o600, addr=0, size=2**62, pieces=[]), E.EINVAL),
    ("make: mode 'rw'", req("xemem_make", kind="range", mode="rw", addr=0, size=4096, pieces=[]), E.EINVAL),
    ("make: mode 01000", req("xemem_make", kind="range", mode=0o1000, addr=0, size=4096, pieces=[]), E.EINVAL),
    ("make: kind 'bogus'", req("xemem_make", kind="bogus", mode=0o600), E.EINVAL),
    ("make: kind 42", req("xemem_make", kind=42, mode=0o600, addr=0, size=4096, pieces=[]), None),
    ("make: pieces not an array", req("xemem_make", mode=0o600, addr=0, size=4096, pieces="x"), E.EINVAL),
    ("make: no pieces", req("xemem_make", mode=0o600, addr=0, size=4096, pieces=[]), E.EINVAL),
    ("make: 5000 pieces", req("xemem_make", mode=0o600, addr=0, size=4096,
                              pieces=[[0, 4096, 0, 0, 1, 3]] * 5000), E.EINVAL),
    ("make: a piece of 1 byte", req("xemem_make", mode=0o600, addr=0, size=4096,
                                    pieces=[[0, 1, 0, 0, 1, 3]]), E.EINVAL),
    ("make: a piece naming descriptor 9999", req("xemem_make", mode=0o600, addr=0, size=4096,
                                                 pieces=[[0, 4096, 9999, 0, 1, 3]]), None),
    ("make: a piece naming descriptor -1", req("xemem_make", mode=0o600, addr=0, size=4096,
                                               pieces=[[0, 4096, -1, 0, 1, 3]]), E.EINVAL),
    ("make: a piece naming descriptor 2^40", req("xemem_make", mode=0o600, addr=0, size=4096,
                                                 pieces=[[0, 4096, 2**40, 0, 1, 3]]), E.EINVAL),
    ("make: a piece naming stdin", req("xemem_make", mode=0o600, addr=0, size=4096,
                                       pieces=[[0, 4096, 0, 0, 1, 3]]), None),
    ("make: a snapshot of nothing", req("xemem_make", kind="snapshot", source=2**62, mode=0, addr=0,
                                        size=4096, pieces=[[0, 4096, 0, 0, 1, 1]]), E.ENOENT),
    ("make: whole with agent_fd -1", req("xemem_make", kind="whole", mode=0o600, agent_fd=-1), E.EINVAL),
    ("make: whole with agent_fd 9999", req("xemem_make", kind="whole", mode=0o600, agent_fd=9999), E.EINVAL),
    ("an unknown op", req("xemem_frobnicate"), E.EOPNOTSUPP),
    ("an administrator's op (create)", req("create", spec={"name": "evil", "cpus": 1, "memory": "64M"}),
     E.EOPNOTSUPP),
    ("an administrator's op (destroy)", req("destroy", name="xa"), E.EOPNOTSUPP),
    ("no op", dict(version=1), E.EOPNOTSUPP),
    ("protocol version 2", dict(version=2, op="xemem_lookup", name="x"), E.EPROTO),
    ("no version", dict(op="xemem_lookup", name="x"), E.EPROTO),
]
for desc, obj, want in cases:
    refused(desc, call(obj), want)

raws = [
    ("a frame that is not JSON", b"{not json"),
    ("a frame with invalid UTF-8", b'{"version":1,"op":"xemem_lookup","name":"\xff\xfe"}'),
    ("a JSON array", b"[1, 2, 3]"),
    ("a JSON string", b'"xemem_lookup"'),
    ("JSON nested 100000 deep", b"[" * 100000 + b"]" * 100000),
    ("an integer of 400 digits", b'{"version":1,"op":"xemem_get","segid":' + b"9" * 400 + b',"flags":1}'),
]
for desc, payload in raws:
    refused(desc, raw(payload))

# a zero-length frame, and one longer than the limit (its body is never sent)
for desc, n in [("a frame of length 0", 0), ("a frame of 16 MiB + 1", MAX_FRAME + 1),
                ("a frame of 4 GiB - 1", 2**32 - 1)]:
    s = connect()
    s.sendall(struct.pack("<I", n))
    reply, _ = recv_frame(s)
    s.close()
    refused(desc, reply)

# descriptors riding along with a request: the daemon must close them, not keep them
fds = [os.open("/dev/null", os.O_RDONLY | os.O_CLOEXEC) for _ in range(70)]
try:
    r = call(req("xemem_lookup", name="hostile-fds"), fds[:3])
    ok(r is not None and r.get("errno") == errno.ENOENT, "3 descriptors with a lookup: an ordinary answer (%s)"
       % describe(r))
    r = call(req("xemem_lookup", name="hostile-fds"), fds)
    ok(r is None or r.get("ok") is False, "70 descriptors with a lookup: no success (%s)" % describe(r))
finally:
    for fd in fds:
        os.close(fd)

# a frame cut short, then silence: the daemon buffers it without blocking and serves others at once
stall = connect()
stall.sendall(struct.pack("<I", 100) + b'{"version":1')
time.sleep(0.1)
t0 = time.monotonic()
good = answered()
dt = time.monotonic() - t0
ok(good and dt < 0.5, "while a client stalls mid-frame, another is answered at once (after %.2f s)" % dt)
reply, _ = recv_frame(stall)
ok(reply is None or reply.get("ok") is False, "the stalled client gets no answer to half a request (%s)"
   % describe(reply))
stall.close()

# ---- lying descriptors ----


def memfd(size, seals=True):
    fd = os.memfd_create("hostile", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    os.ftruncate(fd, size)
    if seals:
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW)
    return fd


def make_range(fd, ino, size, piece_len=None, prot=3):
    return call(req("xemem_make", kind="range", mode=0o600, addr=0, size=size,
                    pieces=[[0, piece_len or size, fd, 0, ino, prot]]))


shm_path = "/dev/shm/xemem-hostile-%d" % os.getpid()
plain = os.open(shm_path, os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
os.unlink(shm_path)
os.ftruncate(plain, PAGE)
refused("make: a tmpfs file that is not a sealed memfd", make_range(plain, os.fstat(plain).st_ino, PAGE))
os.close(plain)

unsealed = memfd(PAGE, seals=False)
refused("make: a memfd that can still shrink", make_range(unsealed, os.fstat(unsealed).st_ino, PAGE), errno.EPERM)
os.close(unsealed)

sealed = memfd(PAGE)
refused("make: a sealed memfd named with another inode", make_range(sealed, os.fstat(sealed).st_ino + 1, PAGE),
        errno.ESTALE)
refused("make: a piece longer than its memfd", make_range(sealed, os.fstat(sealed).st_ino, 4 * PAGE), errno.EINVAL)
refused("make: pieces that do not cover the size",
        make_range(sealed, os.fstat(sealed).st_ino, 2 * PAGE, piece_len=PAGE), errno.EINVAL)
refused("make: prot 8", make_range(sealed, os.fstat(sealed).st_ino, PAGE, prot=8), errno.EINVAL)

# the honest version works: the daemon takes the memfd and hands it to an attacher
conn = connect()


def on_conn(obj, fds=()):
    send_frame(conn, json.dumps(obj).encode(), fds)
    return recv_frame(conn)


r, _ = on_conn(req("xemem_make", kind="range", mode=0o600, addr=0, size=PAGE,
                   pieces=[[0, PAGE, sealed, 0, os.fstat(sealed).st_ino, 3]]))
segid = r and r.get("ok") and r["result"]["segid"]
if ok(bool(segid), "make: an honest sealed memfd is accepted (%s)" % describe(r)):
    r, _ = on_conn(req("xemem_get", segid=segid, flags=2))
    apid = r and r.get("ok") and r["result"]["apid"]
    r, got = on_conn(req("xemem_attach", apid=apid or 1, offset=0, size=PAGE))
    ok(r is not None and r.get("ok") and len(got) == 1, "attach hands over exactly one descriptor (%d)" % len(got))
    for fd in got:
        os.close(fd)
    r, _ = on_conn(req("xemem_attach", apid=apid or 1, offset=PAGE, size=1))
    refused("attach: at the end", r, errno.ERANGE)
    r, _ = on_conn(req("xemem_attach", apid=apid or 1, offset=0, size=2**55))
    refused("attach: 2^55 bytes", r, errno.ERANGE)
    r, _ = on_conn(req("xemem_remove", segid=segid))
    ok(r is not None and r.get("ok"), "remove it (%s)" % describe(r))
os.close(sealed)

# ---- agents of whole-address-space segments ----


def agent_segment(agent_end):
    r, _ = on_conn(req("xemem_make", kind="whole", mode=0o600, agent_fd=agent_end.fileno()))
    segid = r and r.get("ok") and r["result"]["segid"]
    r, _ = on_conn(req("xemem_get", segid=segid or 1, flags=1))
    apid = r and r.get("ok") and r["result"]["apid"]
    return segid, apid


# an agent that never answers: the attach waits for it, the daemon does not
mine, theirs = socket.socketpair()
segid, apid = agent_segment(theirs)
if ok(bool(segid and apid), "make: a whole-address-space segment with an agent that never answers"):
    send_frame(conn, json.dumps(req("xemem_attach", apid=apid, offset=16 * PAGE, size=PAGE)).encode(), ())
    time.sleep(0.1)
    t0 = time.monotonic()
    good = answered()
    dt = time.monotonic() - t0
    ok(good and dt < 0.5, "while an attach waits for a silent agent, the daemon answers others at once (%.2f s)"
       % dt)
    mine.close()  # the agent goes away: the waiting attach is answered
    r, _ = recv_frame(conn)
    refused("attach through an agent that closed its socket", r, errno.EPIPE)
    on_conn(req("xemem_remove", segid=segid))
else:
    mine.close()
theirs.close()


def lying_agent(sock, make_reply, close_after):
    """Answers every convert request with make_reply(request); with close_after, only the first, then leaves."""
    try:
        while True:
            hdr = recv_exact(sock, 4)
            if hdr is None:
                return
            (n,) = struct.unpack("<I", hdr)
            q = json.loads(recv_exact(sock, n))
            sock.sendall(make_reply(q))
            if close_after:
                sock.shutdown(socket.SHUT_RDWR)
                return
    except OSError:
        return


def frame(obj):
    body = json.dumps(obj).encode()
    return struct.pack("<I", len(body)) + body


liar_fd = os.open("/dev/null", os.O_RDWR | os.O_CLOEXEC)
liars = [
    ("an agent naming /dev/null as its memory",
     lambda q: frame(dict(version=1, ok=True, seq=q["seq"],
                          result=dict(pieces=[[q["addr"], q["size"], liar_fd, 0, os.fstat(liar_fd).st_ino, 3]]))),
     None),
    ("an agent whose pieces do not cover the range",
     lambda q: frame(dict(version=1, ok=True, seq=q["seq"], result=dict(pieces=[]))), errno.EINVAL),
    ("an agent answering garbage", lambda q: struct.pack("<I", 5) + b"}}}}}", None),
    ("an agent announcing a 4 GiB answer", lambda q: struct.pack("<I", 2**32 - 1), None),
    # the answer is not taken for the attach's: the attach waits on, and ends when the agent leaves
    ("an agent answering another request's seq, then leaving",
     lambda q: frame(dict(version=1, ok=True, seq=q["seq"] + 1, result=dict(pieces=[]))), errno.EPIPE),
]
for desc, make_reply, want in liars:
    mine, theirs = socket.socketpair()
    t = threading.Thread(target=lying_agent, args=(mine, make_reply, "leaving" in desc), daemon=True)
    t.start()
    segid, apid = agent_segment(theirs)
    r, got = on_conn(req("xemem_attach", apid=apid or 1, offset=16 * PAGE, size=PAGE))
    for fd in got:
        os.close(fd)
    refused("attach through " + desc, r, want)
    on_conn(req("xemem_remove", segid=segid or 1))
    mine.close()
    theirs.close()
os.close(liar_fd)
conn.close()

ok(answered(), "the daemon still answers on its XEMEM socket")
print("1..%d" % count, flush=True)
