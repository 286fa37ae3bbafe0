"""A private network namespace for a test process, so test runs cannot collide.

The simulator listens where the real platform would: `<app>.fly.dev` is 127.0.0.1:5432 and the
public IPv6 is [::1]:5432. Two test processes on one machine (two developers' runs, or the
parallel workers of one run) would fight over those. Each process moves into a network
namespace of its own with only a loopback interface, which needs CAP_SYS_ADMIN (root, as in
CI); without it the process stays where it is and the tests must run one process at a time.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

CLONE_NEWNET = 0x40000000
SIOCGIFFLAGS = 0x8913
SIOCSIFFLAGS = 0x8914
IFF_UP = 0x1


def isolate() -> bool:
    """Move this process (its calling thread, and every thread and child it starts from now
    on) into a new network namespace with `lo` up; False when that is not allowed."""
    if os.geteuid() != 0:
        return False
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.unshare(CLONE_NEWNET) != 0:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH", b"lo", 0)
        flags = struct.unpack("16sH", fcntl.ioctl(sock, SIOCGIFFLAGS, request)[:18])[1]
        fcntl.ioctl(sock, SIOCSIFFLAGS, struct.pack("16sH", b"lo", flags | IFF_UP))
    return True
