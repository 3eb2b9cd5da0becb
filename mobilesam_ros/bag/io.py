"""Reading and writing rosbag2 (sqlite3 and MCAP) with ``rosbags``: no ROS install.

:class:`InputBag` opens a recording and turns every way it can be unusable (missing,
not a bag, corrupt, truncated, a topic that is not there) into a :class:`BagError`
with one line that says what is wrong. :class:`OutputBag` writes one; closing it
(also after Ctrl-C or an error) leaves a complete, readable bag.
"""

from __future__ import annotations

import shutil
from collections import Counter
from pathlib import Path
from typing import Any, Iterable, Iterator

from .typestore import bag_typestore

STORAGES = ("sqlite3", "mcap")


class BagError(Exception):
    """A bag that cannot be used as asked: the message is one line for the user."""


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def storage_of(path: Path) -> str:
    """The storage format of a rosbag2: a ``.mcap`` / ``.db3`` file, or a directory
    (its metadata.yaml says; else the files in it do)."""
    if path.is_file():
        return "mcap" if path.suffix == ".mcap" else "sqlite3"
    metadata = path / "metadata.yaml"
    if metadata.is_file():
        for line in metadata.read_text(errors="replace").splitlines():
            key, _, value = line.strip().partition(":")
            if key == "storage_identifier" and value.strip() in STORAGES:
                return value.strip()
    return "mcap" if any(path.glob("*.mcap")) else "sqlite3"


def is_bag(path: Path) -> bool:
    """What ``--overwrite`` may delete: a rosbag2 directory or file, nothing else."""
    if path.is_file():
        return path.suffix in (".mcap", ".db3")
    if not path.is_dir():
        return False
    entries = list(path.iterdir())
    return (path / "metadata.yaml").is_file() and all(
        e.is_file() and (e.name == "metadata.yaml" or e.suffix in (".mcap", ".db3", ".zstd") or e.name.endswith(("-shm", "-wal")))
        for e in entries
    )


class InputBag:
    """A rosbag2 opened for reading (see the module docstring)."""

    def __init__(self, path: str | Path) -> None:
        from rosbags.rosbag2 import Reader

        self.path = Path(path)
        if not self.path.exists():
            raise BagError(f"input bag not found: {self.path}")
        self.storage = storage_of(self.path)
        try:
            self.reader = Reader(self.path)
            self.reader.open()
        except Exception as exc:  # noqa: BLE001 - rosbags raises several types for unusable files
            raise BagError(f"cannot read {self.path} as a rosbag2 ({self.storage}): {_first_line(exc)}") from None
        self.connections = list(self.reader.connections)
        try:
            self.typestore = bag_typestore(self.connections)
        except Exception as exc:  # noqa: BLE001 - conflicting definitions
            self.close()
            raise BagError(f"cannot use the message definitions in {self.path}: {_first_line(exc)}") from None

    # --- topics ---------------------------------------------------------------------
    def topics(self) -> dict[str, tuple[str, int]]:
        """Topic -> (message type, message count)."""
        out: dict[str, tuple[str, int]] = {}
        for conn in self.connections:
            msgtype, count = out.get(conn.topic, (conn.msgtype, 0))
            out[conn.topic] = (msgtype, count + conn.msgcount)
        return out

    def describe_topics(self) -> str:
        topics = self.topics()
        if not topics:
            return "the bag has no topics"
        return "its topics: " + ", ".join(f"{t} ({m.split('/')[-1]}, {n})" for t, (m, n) in sorted(topics.items()))

    def connections_of(self, topic: str, msgtypes: Iterable[str], what: str) -> list[Any]:
        """The connections of ``topic``; a BagError naming the bag's topics when it is
        missing or has another type."""
        msgtypes = tuple(msgtypes)
        conns = [c for c in self.connections if c.topic == topic]
        if not conns:
            raise BagError(f"{what} topic {topic} is not in {self.path}; {self.describe_topics()}")
        wrong = [c.msgtype for c in conns if c.msgtype not in msgtypes]
        if wrong:
            raise BagError(f"{what} topic {topic} has type {wrong[0]}, expected {' or '.join(msgtypes)}")
        return conns

    # --- messages ---------------------------------------------------------------------
    def messages(self, connections: list[Any]) -> Iterator[tuple[Any, int, bytes]]:
        """(connection, log time ns, raw CDR) in log-time order; a read failure in the
        middle (corrupt or truncated storage) becomes a BagError."""
        iterator = self.reader.messages(connections=connections)
        while True:
            try:
                item = next(iterator)
            except StopIteration:
                return
            except Exception as exc:  # noqa: BLE001 - rosbags raises many types for a damaged file
                raise BagError(f"{self.path} is corrupt or truncated: {_first_line(exc)}") from None
            yield item

    def deserialize(self, raw: bytes, msgtype: str) -> Any:
        return self.typestore.deserialize_cdr(raw, msgtype)

    def close(self) -> None:
        reader, self.reader = getattr(self, "reader", None), None
        if reader is not None:
            try:
                reader.close()
            except Exception:  # noqa: BLE001 - closing a reader that failed half-way
                pass


class OutputBag:
    """A rosbag2 being written; ``close`` finalises it (metadata, MCAP summary)."""

    def __init__(self, path: str | Path, storage: str, typestore: Any, overwrite: bool = False) -> None:
        from rosbags.rosbag2 import StoragePlugin, Writer

        if storage not in STORAGES:
            raise BagError(f"storage must be one of {', '.join(STORAGES)}, got {storage}")
        self.path = Path(path)
        if self.path.exists() or self.path.is_symlink():
            if not overwrite:
                raise BagError(f"output {self.path} exists: choose another --out or pass --overwrite")
            if not is_bag(self.path):
                raise BagError(f"output {self.path} exists and is not a rosbag2: not overwriting it")
            if self.path.is_dir():
                shutil.rmtree(self.path)
            else:
                self.path.unlink()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.storage = storage
        self.typestore = typestore
        plugin = StoragePlugin.MCAP if storage == "mcap" else StoragePlugin.SQLITE3
        self.writer = Writer(self.path, version=Writer.VERSION_LATEST, storage_plugin=plugin)
        try:
            self.writer.open()
        except Exception as exc:  # noqa: BLE001 - any writer failure is one clear error
            raise BagError(f"cannot write {self.path}: {_first_line(exc)}") from None
        self.counts: Counter[str] = Counter()
        self._topics: dict[int, str] = {}

    def add(self, topic: str, msgtype: str, typestore: Any = None, qos: Any = ()) -> Any:
        """Register a topic; returns the connection to ``write`` with."""
        conn = self.writer.add_connection(
            topic, msgtype, typestore=typestore or self.typestore, offered_qos_profiles=qos
        )
        self._topics[conn.id] = topic
        return conn

    def write(self, conn: Any, timestamp: int, raw: bytes | memoryview) -> None:
        self.writer.write(conn, timestamp, raw)
        self.counts[self._topics[conn.id]] += 1

    def close(self) -> None:
        writer, self.writer = self.writer, None
        if writer is not None:
            writer.close()
