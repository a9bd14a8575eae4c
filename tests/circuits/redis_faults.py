"""Faulty surroundings for the Redis store's tests: a TCP proxy that drops, stalls or rewrites
replies, private redis-servers with passwords, ACL users or TLS, and a server that speaks
another protocol. Everything binds to 127.0.0.1 and is stopped by the test that starts it.

Not a test module: ``test_redis_faults.py`` imports it (and spawned children import that).
"""

from __future__ import annotations

import contextlib
import selectors
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import redis

HTTP_REPLY = b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n"


def _command_name(data: bytes) -> bytes:
    """The command of a RESP request chunk (``*N\\r\\n$L\\r\\nNAME\\r\\n...``)."""
    parts = data.split(b"\r\n", 3)
    return parts[2].upper() if len(parts) > 2 and data.startswith(b"*") else b""


class RedisProxy:
    """A loopback TCP proxy in front of a redis-server, one thread, with faults on demand:

    - ``drop_replies(n)``: the next ``n`` replies of the server are not forwarded; the
      proxy closes that client connection instead (the server did run the command);
    - ``stall(seconds)``: replies are held for ``seconds`` (a client that gives up and
      closes never gets them; the server did run the commands);
    - ``mode``: ``"forward"`` (default); ``"noscript"`` answers every EVALSHA itself with
      NOSCRIPT (the script is never run); ``"unscripted"`` answers EVALSHA, EVAL and SCRIPT
      with "unknown command" (a server without Lua); ``"garble"`` replaces every reply by an
      HTTP response (a server of another protocol).
    """

    def __init__(self, upstream_port: int) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port: int = self._listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.mode = "forward"
        self.dropped = 0
        self.attempts = 0  # connections clients opened to the proxy
        self._drops = 0
        self._hold_until = 0.0
        self._lock = threading.Lock()
        self._peer: dict[socket.socket, socket.socket] = {}
        self._clients: set[socket.socket] = set()
        self._held: dict[socket.socket, bytearray] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-proxy", daemon=True)
        self._thread.start()

    def drop_replies(self, count: int = 1) -> None:
        with self._lock:
            self._drops += count

    def stall(self, seconds: float) -> None:
        with self._lock:
            self._hold_until = time.monotonic() + seconds

    def resume(self) -> None:
        with self._lock:
            self._hold_until = 0.0

    def _run(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self._listener, selectors.EVENT_READ)
            while not self._stop.is_set():
                for key, _ in selector.select(0.01):
                    sock: Any = key.fileobj
                    if sock is self._listener:
                        self._accept(selector)
                    elif sock in self._peer:
                        self._pump(selector, sock)
                self._flush()
            for sock in list(self._peer):
                self._close_pair(selector, sock)

    def _accept(self, selector: selectors.BaseSelector) -> None:
        client, _ = self._listener.accept()
        self.attempts += 1
        try:
            server = socket.create_connection(self.upstream, timeout=5)
        except OSError:
            client.close()
            return
        self._peer[client], self._peer[server] = server, client
        self._clients.add(client)
        selector.register(client, selectors.EVENT_READ)
        selector.register(server, selectors.EVENT_READ)

    def _close_pair(self, selector: selectors.BaseSelector, sock: socket.socket) -> None:
        peer = self._peer.pop(sock, None)
        for one in (sock, peer):
            if one is None:
                continue
            self._peer.pop(one, None)
            self._clients.discard(one)
            self._held.pop(one, None)
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(one)
            one.close()

    def _pump(self, selector: selectors.BaseSelector, sock: socket.socket) -> None:
        try:
            data = sock.recv(1 << 16)
        except OSError:
            data = b""
        if not data:
            self._close_pair(selector, sock)
            return
        peer = self._peer[sock]
        try:
            if sock in self._clients:
                self._from_client(sock, peer, data)
            else:
                self._from_server(selector, sock, peer, data)
        except OSError:
            self._close_pair(selector, sock)

    def _from_client(self, client: socket.socket, server: socket.socket, data: bytes) -> None:
        name = _command_name(data)
        if self.mode == "noscript" and name == b"EVALSHA":
            client.sendall(b"-NOSCRIPT No matching script. Please use EVAL.\r\n")
        elif self.mode == "unscripted" and name in (b"EVALSHA", b"EVAL", b"SCRIPT"):
            client.sendall(b"-ERR unknown command '" + name + b"', with args beginning with: \r\n")
        else:
            server.sendall(data)

    def _from_server(
        self,
        selector: selectors.BaseSelector,
        server: socket.socket,
        client: socket.socket,
        data: bytes,
    ) -> None:
        with self._lock:
            drop = self._drops > 0
            if drop:
                self._drops -= 1
                self.dropped += 1
            held = time.monotonic() < self._hold_until
        if drop:
            self._close_pair(selector, server)
        elif self.mode == "garble":
            client.sendall(HTTP_REPLY)
        elif held:
            self._held.setdefault(client, bytearray()).extend(data)
        else:
            client.sendall(data)

    def _flush(self) -> None:
        if not self._held:
            return
        with self._lock:
            if time.monotonic() < self._hold_until:
                return
        held, self._held = self._held, {}
        for client, data in held.items():
            with contextlib.suppress(OSError):
                client.sendall(bytes(data))

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._listener.close()

    def __enter__(self) -> RedisProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


class PrivateRedis:
    """A redis-server of the test's own on a free loopback port: no persistence, an optional
    ``requirepass`` and TLS (``tls=(cert, key)``: TLS only, on the same port)."""

    def __init__(
        self,
        *extra: str,
        password: str | None = None,
        tls: tuple[Path, Path] | None = None,
    ) -> None:
        self.port = free_port()
        self.password = password
        self.tls = tls
        self.extra = extra
        self.process: subprocess.Popen[bytes] | None = None
        self._directory = tempfile.mkdtemp(prefix="suitkaise-redis-")

    @property
    def host_url(self) -> str:
        scheme = "rediss" if self.tls else "redis"
        return f"{scheme}://127.0.0.1:{self.port}"

    def admin(self, **options: Any) -> redis.Redis:
        """A client of the default user (with the password), closed by the caller."""
        tls: dict[str, Any] = {}
        if self.tls:
            tls = {"ssl": True, "ssl_ca_certs": str(self.tls[0])}
        # RESP2: it works on every server, also one without HELLO.
        settings: dict[str, Any] = {"socket_timeout": 5, "socket_connect_timeout": 5, "protocol": 2}
        return redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password,
            **{**settings, **tls, **options},
        )  # fmt: skip

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary is not None, "redis-server is not installed (scripts/ensure-redis)"
        args = [binary, "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", self._directory]  # fmt: skip
        if self.tls:
            cert, key = self.tls
            args += ["--port", "0", "--tls-port", str(self.port), "--tls-cert-file", str(cert),
                     "--tls-key-file", str(key), "--tls-ca-cert-file", str(cert),
                     "--tls-auth-clients", "no"]  # fmt: skip
        else:
            args += ["--port", str(self.port)]
        if self.password:
            args += ["--requirepass", self.password]
        self.process = subprocess.Popen(
            [*args, *self.extra], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                break
            with contextlib.closing(self.admin(socket_timeout=0.5)) as client:
                try:
                    if client.ping():
                        return
                except redis.RedisError:
                    time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        process, self.process = self.process, None
        if process is not None:
            process.terminate()
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()

    def close(self) -> None:
        self.stop()
        shutil.rmtree(self._directory, ignore_errors=True)

    def __enter__(self) -> PrivateRedis:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def tls_material(directory: Path) -> tuple[Path, Path] | None:
    """A self-signed certificate (and its key) for 127.0.0.1, or ``None`` if this machine
    cannot run a TLS redis-server (no openssl, or redis-server built without TLS)."""
    openssl, server = shutil.which("openssl"), shutil.which("redis-server")
    if openssl is None or server is None:
        return None
    cert, key = directory / "cert.pem", directory / "key.pem"
    made = subprocess.run(
        [openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
         "-keyout", str(key), "-out", str(cert), "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1"],
        capture_output=True, timeout=60, check=False,
    )  # fmt: skip
    if made.returncode != 0:
        return None
    # A server built without TLS rejects the directive itself; one with TLS fails later,
    # on the missing key file. Either way it exits at once.
    probe = subprocess.run(
        [server, "--port", "0", "--tls-port", str(free_port()), "--bind", "127.0.0.1",
         "--tls-cert-file", str(directory / "absent.pem"), "--save", ""],
        capture_output=True, timeout=30, check=False, text=True,
    )  # fmt: skip
    if "Bad directive" in probe.stdout + probe.stderr:
        return None
    return cert, key


@contextlib.contextmanager
def other_protocol_server() -> Iterator[str]:
    """A loopback server that answers anything with an HTTP error: its ``redis://`` URL."""
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.05)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except (TimeoutError, OSError):
                continue
            with conn:
                conn.settimeout(2)
                with contextlib.suppress(OSError):
                    conn.recv(1 << 16)
                    conn.sendall(HTTP_REPLY)

    thread = threading.Thread(target=serve, name="http-server", daemon=True)
    thread.start()
    try:
        yield f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    finally:
        stop.set()
        thread.join(10)
        listener.close()


# -- a server that speaks just enough Redis, answering as a test tells it --------------------


def resp_command(buffer: bytes) -> tuple[list[bytes] | None, bytes]:
    """The first complete RESP command in ``buffer`` and the rest (``None`` if incomplete)."""
    if not buffer.startswith(b"*") or b"\r\n" not in buffer:
        return None, buffer
    count, rest = buffer[1:].split(b"\r\n", 1)
    args = []
    for _ in range(int(count)):
        if b"\r\n" not in rest:
            return None, buffer
        length, rest = rest[1:].split(b"\r\n", 1)
        size = int(length)
        if len(rest) < size + 2:
            return None, buffer
        args.append(rest[:size])
        rest = rest[size + 2 :]
    return args, rest


def bulk(value: bytes | None) -> bytes:
    return b"$-1\r\n" if value is None else b"$%d\r\n%s\r\n" % (len(value), value)


def unknown_command(args: list[bytes]) -> bytes:
    """What Redis answers a command it does not know (HELLO before Redis 6, a renamed
    command): its first arguments echoed, 128 characters in all, newlines as spaces."""
    echoed = ""
    for arg in args[1:]:
        if len(echoed) >= 128:
            break
        echoed += "'" + arg.decode()[: 128 - len(echoed)] + "' "
    line = f"ERR unknown command '{args[0].decode()}', with args beginning with: {echoed}"
    return b"-" + line.replace("\r", " ").replace("\n", " ").encode() + b"\r\n"


class FakeRedis:
    """A loopback server answering the store's commands like a healthy Redis (handshake
    +OK, the creation script with the circuit's configuration, shorts that do not trip),
    except for the commands in ``overrides``: ``{b"EVALSHA": raw_reply_or_callable}``. A
    callable gets the command's arguments and returns the raw reply (``b""`` closes the
    connection). After replying to ``hang_up_after`` it closes the connection. ``commands``
    records every command received."""

    def __init__(
        self, overrides: dict[bytes, Any] | None = None, *, hang_up_after: bytes = b""
    ) -> None:
        self.overrides = dict(overrides or {})
        self.hang_up_after = hang_up_after  # a command after whose reply it closes
        self.commands: list[list[bytes]] = []
        self.fingerprint: bytes | None = None
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, name="fake-redis", daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            self._threads.append(thread)
            thread.start()

    def _answer(self, args: list[bytes]) -> bytes:
        name = args[0].upper()
        override = self.overrides.get(name)
        if override is not None:
            return override(args) if callable(override) else bytes(override)
        if name in (b"AUTH", b"CLIENT", b"SELECT"):
            return b"+OK\r\n"
        if name == b"EVAL":  # the creation script: the caller's configuration is stored
            config = args[4:10]
            self.fingerprint = b" ".join(config)
            return b"*7\r\n" + b"".join(bulk(v) for v in [*config, self.fingerprint])
        if name == b"EVALSHA":
            return bulk(b"")  # a short that does not trip
        if name == b"HMGET":
            return b"*5\r\n" + b"".join(bulk(v) for v in (b"0", b"0", b"0", b"0", self.fingerprint))
        if name == b"SCRIPT":
            return bulk(b"0" * 40)
        if name == b"TYPE":
            return b"+hash\r\n"
        return unknown_command(args)

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(0.05)
            buffer = b""
            while not self._stop.is_set():
                try:
                    data = conn.recv(1 << 16)
                except TimeoutError:
                    continue
                except OSError:
                    return
                if not data:
                    return
                buffer += data
                while True:
                    args, buffer = resp_command(buffer)
                    if args is None:
                        break
                    self.commands.append(args)
                    reply = self._answer(args)
                    if not reply:
                        return
                    with contextlib.suppress(OSError):
                        conn.sendall(reply)
                    if args[0].upper() == self.hang_up_after:
                        return

    def close(self) -> None:
        self._stop.set()
        self._accepter.join(10)
        for thread in self._threads:
            thread.join(10)
        self._listener.close()

    def __enter__(self) -> FakeRedis:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class SlowLink:
    """A loopback TCP proxy in front of a server whose replies come late: each chunk the
    server sends is held ``delay`` seconds, or (``trickle``) sent one byte every ``trickle``
    seconds. ``slow`` switches the slowness on and off."""

    def __init__(self, upstream_port: int, *, delay: float = 0.0, trickle: float = 0.0) -> None:
        self.upstream = ("127.0.0.1", upstream_port)
        self.delay, self.trickle = delay, trickle
        self.slow = True
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.05)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self._stop = threading.Event()
        self._sockets: list[socket.socket] = []
        self._threads: list[threading.Thread] = []
        self._accepter = threading.Thread(target=self._accept, name="slow-link", daemon=True)
        self._accepter.start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._listener.accept()
            except (TimeoutError, OSError):
                continue
            try:
                server = socket.create_connection(self.upstream, timeout=5)
            except OSError:
                client.close()
                continue
            self._sockets += [client, server]
            for source, sink, slow in ((client, server, False), (server, client, True)):
                thread = threading.Thread(target=self._pipe, args=(source, sink, slow), daemon=True)
                self._threads.append(thread)
                thread.start()

    def _wait(self, seconds: float) -> bool:
        return not self._stop.wait(seconds)

    def _pipe(self, source: socket.socket, sink: socket.socket, slow: bool) -> None:
        source.settimeout(0.05)
        try:
            while not self._stop.is_set():
                try:
                    data = source.recv(1 << 16)
                except TimeoutError:
                    continue
                if not data:
                    break
                if slow and self.slow and self.trickle:
                    for index in range(len(data)):
                        if not self._wait(self.trickle):
                            return
                        sink.sendall(data[index : index + 1])
                    continue
                if slow and self.slow and self.delay and not self._wait(self.delay):
                    return
                sink.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                sink.shutdown(socket.SHUT_RDWR)

    def close(self) -> None:
        self._stop.set()
        self._accepter.join(10)
        for thread in self._threads:
            thread.join(10)
        for sock in self._sockets:
            sock.close()
        self._listener.close()

    def __enter__(self) -> SlowLink:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
