"""One writer process per SQLite database for the web intake (issue 18 item 5).

SQLite has one write lock for the whole database. Web processes that each commit their own
deliveries fight for it across processes; one process alone is limited by its GIL, in which
the durable write's Python runs next to every request's. So the web processes hand each
verified delivery to a single writer process over a Unix socket. The writer reads every
delivery that is waiting, inserts them in one transaction (one fsync for the lot), and only
then answers each one; the web process answers 202 only after that answer. A 202 keeps
meaning "on disk".

Protocol, per connection (one per web thread, one delivery in flight on it at a time):
request = 4-byte big-endian length of the metadata, 4-byte length of the payload, the metadata
(JSON array: event, action, delivery id, hook id, installation id, payload SHA-256), the raw
payload (UTF-8 JSON, already validated by the web process). Answer = one byte: `S` stored,
`D` already stored (delivery id or body), `E` not stored (the database failed; logged here).

Life cycle: the first web process that finds no writer starts one (`python -m
bot.intake.writer`); an exclusive lock on `<database>-intake.lock` makes sure only one runs
per database, the others exit at once. The writer exits after `--idle-exit` seconds without
any connected web process (gunicorn stopped), or on SIGTERM after its current batch. If it
dies, every delivery in flight gets no answer, so the web process answers 503 (GitHub counts
a failed delivery, `beekeeper redeliver` sends it again) and the next delivery starts a new
writer. Nothing acknowledged is lost: an answer is only sent after the commit.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import logging
import os
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import orjson

from bot.intake import inbox

log = logging.getLogger("beekeeper.intake_writer")

_HEAD = struct.Struct("!II")
STORED, DUPLICATE, FAILED = b"S", b"D", b"E"
# Per recv: under malloc's mmap threshold (128 KiB); a 1 MiB buffer measured 31 µs per call.
_RECV_BYTES = 64 * 1024
MAX_PATH = 100  # sun_path holds 108 bytes on Linux; stay clear of it
REPLY_SECONDS = 25.0  # below gunicorn's default 30 s worker timeout
START_SECONDS = 10.0  # a new writer imports SQLAlchemy and opens the database


class WriterUnavailable(Exception):
    """No writer answered for this delivery: it may or may not be stored, it is not acknowledged."""


def database_path(url: str) -> Path | None:
    """The SQLite file behind `url`, or None (PostgreSQL, an in-memory database)."""
    if not url.startswith("sqlite:///"):
        return None
    path = url.split("sqlite:///", 1)[1].split("?", 1)[0]
    return Path(path).absolute() if path and path != ":memory:" else None


def socket_path(database: Path) -> Path:
    return database.with_name(database.name + "-intake.sock")


def usable(url: str) -> bool:
    """A writer process can serve this database: a SQLite file whose socket path fits."""
    database = database_path(url)
    return database is not None and len(str(socket_path(database))) <= MAX_PATH


# --------------------------------------------------------------------------------------------
# the web side
# --------------------------------------------------------------------------------------------


def encode(incoming: inbox.Incoming) -> bytes:
    meta = orjson.dumps([incoming.event, incoming.action, incoming.delivery_id, incoming.hook_id,
                         incoming.installation_id, incoming.payload_sha256])
    payload = incoming.payload.encode("utf-8")
    return _HEAD.pack(len(meta), len(payload)) + meta + payload


class WriterClient:
    """The web process's side: `store()` like GroupCommit's, through the writer process.

    Each web thread keeps one connection (gthread threads live as long as their process), so
    an answer needs no sorting out between threads."""

    def __init__(self, url: str, *, idle_exit: float | None = None):
        database = database_path(url)
        if database is None:
            raise ValueError("the intake writer serves SQLite files only")
        self.url = url
        self.path = str(socket_path(database))
        self.idle_exit = idle_exit
        self._local = threading.local()
        self._start_lock = threading.Lock()
        self.started: list[subprocess.Popen] = []  # writers this process started (tests stop them)

    def store(self, incoming: inbox.Incoming) -> bool:
        """True when stored and committed, False when already stored; WriterUnavailable otherwise."""
        frame = encode(incoming)
        connection = self._connection()
        try:
            connection.sendall(frame)
        except OSError:  # a connection to a writer that has gone: nothing was read, try a new one once
            self._drop()
            connection = self._connection()
            try:
                connection.sendall(frame)
            except OSError as error:
                self._drop()
                raise WriterUnavailable(f"sending to the intake writer failed: {error}") from None
        try:
            answer = connection.recv(1)
        except OSError as error:
            self._drop()
            raise WriterUnavailable(f"no answer from the intake writer: {error}") from None
        if answer == STORED:
            return True
        if answer == DUPLICATE:
            return False
        self._drop()
        if answer == FAILED:
            raise WriterUnavailable("the intake writer could not store the delivery (database error, see its log)")
        raise WriterUnavailable("the intake writer closed the connection before answering")

    def close(self) -> None:
        self._drop()

    def _drop(self) -> None:
        connection = getattr(self._local, "connection", None)
        self._local.connection = None
        if connection is not None:
            connection.close()

    def _connection(self) -> socket.socket:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._local.connection = self._connect()
        return connection

    def _connect(self) -> socket.socket:
        try:
            return self._try_connect()
        except OSError:
            pass
        with self._start_lock:  # one start per process at a time; the writer's file lock does the rest
            deadline = time.monotonic() + START_SECONDS
            try:
                return self._try_connect()
            except OSError:
                process = self._start()
            while True:
                try:
                    return self._try_connect()
                except OSError as error:
                    if process.poll() not in (None, 0) or time.monotonic() >= deadline:
                        raise WriterUnavailable(f"the intake writer did not start ({error})") from None
                    time.sleep(0.01)

    def _try_connect(self) -> socket.socket:
        connection = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            connection.settimeout(REPLY_SECONDS)
            connection.connect(self.path)
        except BaseException:
            connection.close()
            raise
        return connection

    def _start(self) -> subprocess.Popen:
        """`python -m bot.intake.writer` for this database, in a session of its own (a Ctrl-C or
        a signal to the web process's group does not cut a commit short)."""
        import bot

        code = str(Path(bot.__file__).resolve().parent.parent)  # this very tree (gunicorn --pythonpath)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([code, os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep)}
        command = [sys.executable, "-m", "bot.intake.writer", "--database-url", self.url]
        if self.idle_exit is not None:
            command += ["--idle-exit", str(self.idle_exit)]
        log.info("starting the intake writer for %s", self.url)
        process = subprocess.Popen(command, env=env, stdin=subprocess.DEVNULL, start_new_session=True)  # noqa: S603
        self.started.append(process)
        threading.Thread(target=process.wait, name="beekeeper-writer-reaper", daemon=True).start()
        return process


# --------------------------------------------------------------------------------------------
# the writer process
# --------------------------------------------------------------------------------------------


class _Peer:
    __slots__ = ("sock", "buffer")

    def __init__(self, sock: socket.socket):
        self.sock, self.buffer = sock, bytearray()


class Writer:
    """Reads every waiting delivery, commits them together, answers each after the commit."""

    def __init__(self, url: str, idle_exit: float = 60.0):
        from bot.core.db import make_engine

        database = database_path(url)
        if database is None:
            raise SystemExit("the intake writer serves SQLite files only")
        self.path = socket_path(database)
        self.lock_path = database.with_name(database.name + "-intake.lock")
        self.insert = inbox._BatchInsert(make_engine(url))
        self.idle_exit = idle_exit
        self.stopping = False
        self.selector = selectors.DefaultSelector()
        self.peers: dict[int, _Peer] = {}
        self.transactions = self.deliveries = 0

    def run(self) -> int:
        lock = open(self.lock_path, "a")  # noqa: SIM115 - held until the process ends
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            if error.errno in (errno.EAGAIN, errno.EACCES):
                return 0  # another writer serves this database
            raise
        listener = self._listen()
        log.info("intake writer serving %s (pid %s)", self.path, os.getpid())
        idle_since = time.monotonic()
        try:
            while not self.stopping:
                batch = self._read(listener)
                if batch:
                    self._commit(batch)
                if self.peers:
                    idle_since = time.monotonic()
                elif time.monotonic() - idle_since >= self.idle_exit:
                    log.info("intake writer: no web process connected for %.0f s, exiting", self.idle_exit)
                    break
        finally:
            log.info("intake writer: %s deliveries in %s transactions", self.deliveries, self.transactions)
            self.path.unlink(missing_ok=True)  # under the lock: a new writer binds afresh
            listener.close()
            lock.close()
        return 0

    def _listen(self) -> socket.socket:
        self.path.unlink(missing_ok=True)  # a dead writer's socket (we hold the lock: it is dead)
        listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        umask = os.umask(0o177)  # the socket accepts deliveries unverified: owner only
        try:
            listener.bind(str(self.path))
        finally:
            os.umask(umask)
        listener.listen(256)
        listener.setblocking(False)
        self.selector.register(listener, selectors.EVENT_READ)
        return listener

    def _read(self, listener: socket.socket) -> list[tuple[_Peer, inbox.Incoming]]:
        """Every complete delivery that has arrived (waits up to half a second for one)."""
        batch: list[tuple[_Peer, inbox.Incoming]] = []
        for key, _ in self.selector.select(timeout=0.5):
            if key.fileobj is listener:
                self._accept(listener)
                continue
            peer = self.peers[key.fd]
            try:
                data = peer.sock.recv(_RECV_BYTES)
            except (BlockingIOError, InterruptedError):
                continue
            except OSError:
                data = b""
            if not data:
                self._close(peer)
                continue
            peer.buffer += data
            batch += [(peer, item) for item in self._frames(peer)]
        return batch

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                sock, _ = listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            sock.setblocking(False)
            self.peers[sock.fileno()] = _Peer(sock)
            self.selector.register(sock, selectors.EVENT_READ)

    def _frames(self, peer: _Peer) -> list[inbox.Incoming]:
        items = []
        buffer = peer.buffer
        while len(buffer) >= _HEAD.size:
            meta_length, payload_length = _HEAD.unpack_from(buffer)
            end = _HEAD.size + meta_length + payload_length
            if len(buffer) < end:
                break
            event, action, delivery_id, hook_id, installation_id, sha256 = orjson.loads(
                bytes(buffer[_HEAD.size:_HEAD.size + meta_length]))
            payload = buffer[_HEAD.size + meta_length:end].decode("utf-8")
            items.append(inbox.Incoming(event=event, action=action, delivery_id=delivery_id, hook_id=hook_id,
                                        installation_id=installation_id, payload=payload, payload_sha256=sha256))
            del buffer[:end]
        return items

    def _commit(self, batch: list[tuple[_Peer, inbox.Incoming]]) -> None:
        waiting = [inbox._Waiting(item) for _, item in batch]
        self.deliveries += len(waiting)
        for start in range(0, len(waiting), inbox._BatchInsert.MAX_ROWS):
            self.transactions += 1
            inbox.commit_batch(self.insert, waiting[start:start + inbox._BatchInsert.MAX_ROWS])
        for (peer, item), result in zip(batch, waiting, strict=True):
            if result.error is not None:
                log.error("delivery=%s not stored: %s: %.300s", item.delivery_id, type(result.error).__name__,
                          result.error)
            answer = FAILED if result.error is not None else STORED if result.stored else DUPLICATE
            try:
                peer.sock.send(answer)  # one byte into an empty buffer (one delivery in flight per peer)
            except OSError:
                self._close(peer)  # the web thread gave up (timeout): it answered 503 already

    def _close(self, peer: _Peer) -> None:
        if self.peers.pop(peer.sock.fileno(), None) is not None:
            self.selector.unregister(peer.sock)
            peer.sock.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bot.intake.writer", description=__doc__.split("\n\n")[0])
    parser.add_argument("--database-url", required=True)
    parser.add_argument("--idle-exit", type=float, default=60.0,
                        help="exit after this many seconds without a connected web process")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    writer = Writer(args.database_url, idle_exit=args.idle_exit)

    def stop(_signum, _frame):
        writer.stopping = True

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    return writer.run()


if __name__ == "__main__":
    sys.exit(main())
