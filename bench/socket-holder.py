#!/usr/bin/env python3
"""bench/socket-holder.py: plays systemd's part for bluegreen.socket in the benches.

Binds ADDRs (host:port, comma-separated), runs COMMAND with them as its file descriptors
3, 4, ... (LISTEN_FDS, LISTEN_PID: socket activation), and writes its pid to PIDFILE.
On SIGUSR1 it stops COMMAND (SIGTERM, then waits for it) and runs it again on the same
sockets, as `systemctl restart bluegreen` does with the socket unit: connections that come
meanwhile wait in the backlog. SIGTERM or SIGINT stops COMMAND and exits.

Usage: socket-holder.py PIDFILE ADDR[,ADDR...] COMMAND [ARG...]
"""
import fcntl
import os
import signal
import socket
import sys

SIGNALS = {signal.SIGUSR1, signal.SIGTERM, signal.SIGINT}


def listen(addr):
    host, port = addr.rsplit(":", 1)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, int(port)))
    sock.listen(4096)
    return sock


def start(fds, command, pidfile):
    pid = os.fork()
    if pid == 0:
        signal.pthread_sigmask(signal.SIG_SETMASK, [])
        # Above the targets first, so that no move overwrites another socket.
        high = [fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 3 + len(fds)) for fd in fds]
        for i, fd in enumerate(high):
            os.dup2(fd, 3 + i, inheritable=True)
        os.environ["LISTEN_FDS"] = str(len(fds))
        os.environ["LISTEN_PID"] = str(os.getpid())
        os.execvp(command[0], command)
    with open(pidfile + ".tmp", "w") as f:
        f.write(f"{pid}\n")
    os.rename(pidfile + ".tmp", pidfile)
    return pid


def stop(pid):
    os.kill(pid, signal.SIGTERM)
    os.waitpid(pid, 0)


def main():
    pidfile, addrs, command = sys.argv[1], sys.argv[2].split(","), sys.argv[3:]
    signal.pthread_sigmask(signal.SIG_BLOCK, SIGNALS)
    sockets = [listen(addr) for addr in addrs]
    fds = [s.fileno() for s in sockets]
    pid = start(fds, command, pidfile)
    while True:
        sig = signal.sigwait(SIGNALS)
        stop(pid)
        if sig != signal.SIGUSR1:
            return
        pid = start(fds, command, pidfile)


if __name__ == "__main__":
    main()
