#!/usr/bin/env python3
"""Send one QMP command to a QEMU started with QMP_SOCK=path (stdlib only).

usage: qmp.py SOCKET COMMAND [JSON-ARGUMENTS]
  qmp.py /tmp/vm.qmp system_powerdown
  qmp.py /tmp/vm.qmp query-status
  qmp.py --wait 10 /tmp/vm.qmp query-status   # retry connecting for up to 10 s

Prints the command's "return" value as JSON on stdout; exits 1 with QEMU's error class and
description on stderr if QEMU refuses the command, 2 on usage or connection errors.
"""
import json
import socket
import sys
import time


class QmpError(Exception):
    pass


def connect(path, wait):
    deadline = time.monotonic() + wait
    while True:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(path)
            return sock
        except OSError as err:
            sock.close()
            if time.monotonic() >= deadline:
                raise QmpError(f"cannot connect to QMP socket {path}: {err}") from err
            time.sleep(0.2)


def read_message(stream):
    """Next reply or error; asynchronous events (e.g. POWERDOWN) are skipped."""
    while True:
        line = stream.readline()
        if not line:
            raise QmpError("QEMU closed the QMP connection")
        msg = json.loads(line)
        if "event" not in msg:
            return msg


def execute(stream, sock, command, arguments=None):
    request = {"execute": command}
    if arguments is not None:
        request["arguments"] = arguments
    sock.sendall(json.dumps(request).encode() + b"\n")
    reply = read_message(stream)
    if "error" in reply:
        err = reply["error"]
        raise QmpError(f"{command}: {err.get('class')}: {err.get('desc')}")
    return reply.get("return")


def main(argv):
    wait = 0.0
    if len(argv) >= 2 and argv[0] == "--wait":
        wait = float(argv[1])
        argv = argv[2:]
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    path, command = argv[0], argv[1]
    try:
        arguments = json.loads(argv[2]) if len(argv) == 3 else None
    except json.JSONDecodeError as err:
        print(f"qmp.py: arguments are not JSON: {err}", file=sys.stderr)
        return 2
    try:
        sock = connect(path, wait)
        with sock, sock.makefile("r", encoding="utf-8") as stream:
            greeting = read_message(stream)
            if "QMP" not in greeting:
                raise QmpError(f"unexpected QMP greeting: {greeting}")
            execute(stream, sock, "qmp_capabilities")
            result = execute(stream, sock, command, arguments)
    except QmpError as err:
        print(f"qmp.py: {err}", file=sys.stderr)
        return 1 if "closed" not in str(err) and "connect" not in str(err) else 2
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
