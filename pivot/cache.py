"""The content-addressed store: .pivot/cache/files/ab/cdef… and links into the workspace."""

from __future__ import annotations

import contextlib
import errno
import itertools
import json
import marshal
import os
import re
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TYPE_CHECKING

import xxhash

from pivot import atomic
from pivot.errors import CacheError
from pivot.hashing import CHUNK, RACY_NS, hash_bytes, parse_manifest, read_buffer
from pivot.records import DirEntry, FileMemoRow, OutputKind, PathRecord, is_digest

if TYPE_CHECKING:
    from pivot.state import State

_HASH_KEY = re.compile(r'\{"hash":"([0-9a-f]{32})"')

_FICLONE = 0x40049409  # linux/fs.h: clone a whole file (reflink)




# State key prefix of the memo "every object of this folder output's manifest is in the cache".
COMPLETE_KEY = "cache-complete:"


def _stats_digest(stats: list[tuple[int, int, int, int]]) -> str:
    return xxhash.xxh3_64_hexdigest(marshal.dumps(stats, 2))


def object_relpath(digest: str) -> str:
    """files/ab/cdef… for hash abcdef…; the inverse of `digest_of`."""
    if not is_digest(digest):  # a hash from a lock file must never become an arbitrary path
        raise CacheError(f"{digest!r} is not an xxh3-128 hash; the lock file that names it is corrupt")
    return f"files/{digest[:2]}/{digest[2:]}"


def digest_of(relpath: str) -> str:
    parts = relpath.split("/")
    return parts[-2] + parts[-1]


def _reflink(src: str, dst: str) -> bool:
    """Clone src to dst (a new file) with FICLONE; False where unsupported."""
    import fcntl

    with open(src, "rb") as s, open(dst, "wb") as d:
        try:
            fcntl.ioctl(d.fileno(), _FICLONE, s.fileno())
            return True
        except OSError as exc:
            if exc.errno in (errno.EOPNOTSUPP, errno.EXDEV, errno.EINVAL, errno.ENOTTY, errno.EBADF, errno.ENOSYS):
                return False
            raise


def copy_hashing(src: str, dst_fd: int) -> str:
    """Copy src into dst_fd, hashing the bytes on the way: one read for both."""
    with open(src, "rb", buffering=0) as f:
        if os.fstat(f.fileno()).st_size <= CHUNK:
            data = f.read()
            _write_all(dst_fd, memoryview(data))
            return xxhash.xxh3_128_hexdigest(data)
        h = xxhash.xxh3_128()
        view = read_buffer()
        while n := f.readinto(view):
            h.update(view[:n])
            _write_all(dst_fd, view[:n])
    return h.hexdigest()


PARALLEL_PLACE = 256  # files placed by one directory checkout before threads pay off


def _write_all(fd: int, data: memoryview) -> None:
    while data:
        written = os.write(fd, data)
        data = data[written:]


TEMP_SUFFIX = ".pivot-tmp"


def temporary_for(dest: str) -> str:
    """Where a file is made before it is renamed to `dest`: beside it, hidden, named for it."""
    folder, name = os.path.split(dest)
    return os.path.join(folder, f".{name}{TEMP_SUFFIX}")


def is_temporary(rel: str) -> bool:
    """Whether a workspace path is one of Pivot's own temporaries (`temporary_for`): a restore
    killed between making a file and renaming it leaves one behind, and the next restore removes
    it. No user writes such a name, so it never counts as a user's edit."""
    name = rel.rsplit("/", 1)[-1]
    return name.startswith(".") and name.endswith(TEMP_SUFFIX) and len(name) > len(TEMP_SUFFIX) + 1


def unlink_quiet(path: str | Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)


# Whether reflinks work, per cache folder: learnt once per process, not once per file.
_REFLINK_OK: dict[str, bool] = {}


def _copyfile(src: str, dst: str) -> None:
    import shutil  # lazy: shutil (with bz2, lzma) costs start-up time a no-op status does not need

    shutil.copyfile(src, dst)


class Cache:
    def __init__(self, cache_dir: Path, link: str = "auto") -> None:
        self.dir = cache_dir
        self.link = link

    @property
    def _reflink_ok(self) -> bool | None:
        if self.link not in ("auto", "reflink"):
            return False
        return _REFLINK_OK.get(str(self.dir))

    @_reflink_ok.setter
    def _reflink_ok(self, value: bool) -> None:
        _REFLINK_OK[str(self.dir)] = value

    def path(self, digest: str) -> Path:
        return self.dir / object_relpath(digest)

    def has(self, digest: str) -> bool:
        return self.path(digest).is_file()

    def is_linked(self, digest: str, workspace_file: str | Path) -> bool:
        """True when `workspace_file` is the cache object of `digest` itself, not a copy: a
        hardlink to it (same inode) or a symlink resolving to it."""
        obj = self.path(digest)
        try:
            if os.path.islink(workspace_file):
                return os.path.realpath(workspace_file) == os.path.realpath(obj)
            a, b = os.stat(workspace_file), os.stat(obj)
        except OSError:
            return False
        return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)

    def evict_damaged(self, digest: str, workspace_file: str | Path) -> None:
        """Take out of the cache an object that no longer holds the content its name says,
        because `workspace_file`, a link to it, was written in place. The changed content stays
        in the workspace as an ordinary file: a hardlink keeps the inode; a symlink is replaced
        by the object itself, made writable."""
        obj = self.path(digest)
        if os.path.islink(workspace_file):
            os.chmod(obj, 0o666 & ~atomic.umask())
            try:
                os.replace(obj, workspace_file)
            except OSError as exc:
                if exc.errno != errno.EXDEV:  # a symlink may point to another file system
                    raise
                self._link(str(obj), str(workspace_file), make=_copyfile)
                unlink_quiet(obj)
        else:
            unlink_quiet(obj)

    def missing(self, digests: Iterable[str]) -> list[str]:
        """Those of `digests` not in the cache: a stat each when they are few, else one listing
        per prefix folder (10,000 stats cost more than 256 listings)."""
        digests = list(digests)
        if len(digests) < 1024:
            return [d for d in digests if not self.has(d)]
        have: set[str] = set()
        for prefix in {d[:2] for d in digests}:
            with contextlib.suppress(FileNotFoundError, NotADirectoryError):
                have.update(map(prefix.__add__, os.listdir(self.dir / "files" / prefix)))
        return list(itertools.filterfalse(have.__contains__, digests))

    def holds_all(self, digest: str, state: State, key: str) -> bool:
        """Whether directory manifest `digest` and every object it names are in the cache.

        Remembered in `state` under `key` (the output's path) by the stat of the manifest and of
        every prefix folder its objects are in, taken before they were listed: removing, adding
        or renaming an object changes its folder's mtime and ctime (the ctime cannot be set
        back), so while those stats are the remembered ones, every object found then is still
        there. Folders changed within RACY_NS of the listing are not remembered (a second change
        in the same timestamp tick would leave the same stat). Raises CacheError when the
        manifest is missing or unreadable."""
        memo = state.get_json(COMPLETE_KEY + key)
        if isinstance(memo, list) and len(memo) == 3 and memo[0] == digest and isinstance(memo[1], str):
            stats = self._stats(digest, memo[1])
            if stats is not None and _stats_digest(stats) == memo[2]:
                return True
        read = self._stats(digest, "")  # the manifest as it is read
        hashes = self.manifest_hashes(digest)
        prefixes = "".join(sorted({h[:2] for h in hashes}))
        stats = self._stats(digest, prefixes)  # before listing: a change after this one is seen next time
        if stats is None or self.missing(hashes):
            return False
        if read is not None and read[0] == stats[0] and time.time_ns() - max(max(s[:2]) for s in stats) >= RACY_NS:
            state.put_json(COMPLETE_KEY + key, [digest, prefixes, _stats_digest(stats)])
        return True

    def changed_lately(self) -> bool:
        """Whether an object was added or removed in the last RACY_NS (a prefix folder's mtime or
        ctime is that recent): `holds_all` would not remember what it found now."""
        since = time.time_ns() - RACY_NS
        try:
            with os.scandir(os.path.join(self.dir, "files")) as it:
                return any(max(s.st_mtime_ns, s.st_ctime_ns) > since for e in it for s in (e.stat(),))
        except (FileNotFoundError, NotADirectoryError):
            return False

    def _stats(self, digest: str, prefixes: str) -> list[tuple[int, int, int, int]] | None:
        """(mtime, ctime, inode, size) of manifest `digest`, then of each prefix folder (two
        characters each in `prefixes`); None when one is missing."""
        files = os.path.join(self.dir, "files")
        try:
            return [(s.st_mtime_ns, s.st_ctime_ns, s.st_ino, s.st_size)
                    for s in [os.stat(self.path(digest))]
                    + [os.stat(os.path.join(files, prefixes[i:i + 2])) for i in range(0, len(prefixes), 2)]]
        except (FileNotFoundError, NotADirectoryError):
            return None

    # -- writing objects ---------------------------------------------------
    def _tmp(self) -> tuple[int, str]:
        # A new file of the temporary folder, made once (a mkdir per object costs a locked
        # directory lookup, issue #19), readable by its owner only until it is an object.
        return atomic.create_temporary(self.dir / "tmp" / "obj")

    def commit_file(self, tmp: str, digest: str) -> None:
        """Move finished temporary file `tmp` into the cache as object `digest` (dropped if there)."""
        dest = self.path(digest)
        if dest.exists():
            unlink_quiet(tmp)
            return
        os.chmod(tmp, 0o444)
        try:
            os.replace(tmp, dest)
        except FileNotFoundError:  # the object's prefix folder is new (made when needed, as in _tmp)
            dest.parent.mkdir(parents=True, exist_ok=True)
            os.replace(tmp, dest)

    def add_file(self, src: str | Path) -> str:
        """Copy a workspace file into the cache; returns its hash (of the copy actually stored)."""
        fd, tmp = self._tmp()
        try:
            cloned = False
            if self._reflink_ok is not False:
                os.close(fd)
                fd = -1
                cloned = _reflink(str(src), tmp)
                self._reflink_ok = cloned
            if cloned:
                from pivot.hashing import hash_file

                digest = hash_file(tmp)
            else:
                if fd == -1:
                    fd = os.open(tmp, os.O_WRONLY | os.O_TRUNC)
                digest = copy_hashing(str(src), fd)
                os.close(fd)
                fd = -1
            self.commit_file(tmp, digest)
            return digest
        except BaseException:
            if fd != -1:
                os.close(fd)
            unlink_quiet(tmp)
            raise

    def add_bytes(self, data: bytes) -> str:
        digest = hash_bytes(data)
        if self.has(digest):
            return digest
        fd, tmp = self._tmp()
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            self.commit_file(tmp, digest)
        except BaseException:
            unlink_quiet(tmp)
            raise
        return digest

    def manifest_hashes(self, digest: str) -> list[str]:
        """The hashes of the files of directory manifest `digest` (faster than read_manifest)."""
        try:
            data = self.path(digest).read_bytes()
        except FileNotFoundError:
            raise CacheError(f"directory manifest {digest} is missing from the cache") from None
        if data.isascii():  # as manifest_bytes writes it: '{"hash":"' cannot occur in a path
            text = data.decode("ascii")
            found = _HASH_KEY.findall(text)
            if len(found) == text.count('"size":') and (text == "[]" or text.startswith('[{"hash":"')):
                return found
        return [r["hash"] for r in json.loads(data)]

    def read_manifest(self, digest: str) -> list[DirEntry]:
        try:
            return parse_manifest(self.path(digest).read_bytes())
        except FileNotFoundError:
            raise CacheError(f"directory manifest {digest} is missing from the cache") from None

    # -- workspace links ---------------------------------------------------
    def _place(self, digest: str, dest: Path, link: str | None = None) -> None:
        """Put object `digest` at `dest` atomically, using link mode `link` (default: the cache's)."""
        src = self.path(digest)
        if not src.is_file():
            raise CacheError(f"object {digest} for '{dest}' is not in the cache")
        dest.parent.mkdir(parents=True, exist_ok=True)
        self._link(str(src), str(dest), link=link)

    def _link(self, src: str, dest: str, make: Callable[[str, str], object] | None = None,
              link: str | None = None) -> None:
        """Atomically put a link or copy of cache object `src` at `dest`, whose folder exists
        (made by `make`, by default as link mode `link` says, or else the cache's)."""
        make = make or (lambda s, t: self._make(s, t, link or self.link))
        tmp = temporary_for(dest)
        try:
            try:
                make(src, tmp)
            except FileExistsError:  # left by a killed run
                os.unlink(tmp)
                make(src, tmp)
            try:
                os.replace(tmp, dest)
            except IsADirectoryError:
                import shutil  # lazy: see _copyfile

                shutil.rmtree(dest)
                os.replace(tmp, dest)
        except BaseException:
            unlink_quiet(tmp)
            raise

    def _make(self, src: str, tmp: str, link: str) -> None:
        if link == "hardlink":
            try:
                os.link(src, tmp)
            except OSError as exc:
                if exc.errno == errno.EMLINK:  # the object has the most links the file system allows
                    _copyfile(src, tmp)
                    return
                if exc.errno in (errno.EXDEV, errno.EPERM, errno.ENOTSUP):
                    raise CacheError(
                        f"cache.link is 'hardlink' but '{os.path.dirname(tmp) or '.'}' cannot be hardlinked to "
                        f"the cache in '{self.dir}' ({exc.strerror}); hardlinks need both on one file "
                        "system that supports them: use 'symlink', 'copy' or 'auto' in .pivot/config.yaml"
                    ) from None
                raise
        elif link == "symlink":
            os.symlink(os.path.abspath(src), tmp)
        else:
            if link in ("auto", "reflink") and self._reflink_ok is not False:
                cloned = _reflink(src, tmp)
                self._reflink_ok = cloned
                if cloned:
                    return
                if link == "reflink":
                    raise CacheError(
                        "cache.link is 'reflink' but this file system cannot clone files; "
                        "use 'auto' or 'copy' in .pivot/config.yaml"
                    )
            _copyfile(src, tmp)  # a new file: writable, mode from the umask

    def checkout_file(self, digest: str, dest: Path, link: str | None = None) -> None:
        """Put object `digest` at `dest`, by link mode `link` (default: the cache's)."""
        self._place(digest, dest, link)

    def checkout_dir(self, digest: str, dest: Path, current: dict[str, str] | None = None,
                     link: str | None = None) -> list[DirEntry]:
        """Make folder `dest` hold exactly the manifest's files. `current`: known hashes of files
        there; `link`: the link mode (default: the cache's)."""
        entries = self.read_manifest(digest)
        missing = self.missing(e.hash for e in entries)
        if missing:
            raise CacheError(f"{len(missing)} file(s) of directory '{dest}' are missing from the cache")
        if dest.exists() and not dest.is_dir():
            os.unlink(dest)
        wanted = {e.path for e in entries}
        if dest.is_dir():
            for folder, _dirs, files in os.walk(dest, topdown=False):
                for name in files:
                    full = os.path.join(folder, name)
                    if os.path.relpath(full, dest).replace(os.sep, "/") not in wanted:
                        os.unlink(full)
                if folder != str(dest) and not os.listdir(folder):
                    os.rmdir(folder)
        current = current or {}
        base = str(dest)
        todo = [(str(self.path(e.hash)), os.path.join(base, e.path)) for e in entries
                if current.get(e.path) != e.hash]
        for folder in sorted({os.path.dirname(target) for _src, target in todo}):
            os.makedirs(folder, exist_ok=True)
        self._link_many(todo, link)
        dest.mkdir(parents=True, exist_ok=True)
        return entries

    def _link_many(self, todo: list[tuple[str, str]], link: str | None = None) -> None:
        """_link over (object, destination) pairs; many of them on a few threads, since creating
        a file is mostly time in the kernel, which the threads spend in parallel."""
        if len(todo) < PARALLEL_PLACE:
            for src, target in todo:
                self._link(src, target, link=link)
            return
        import threading
        from concurrent.futures import ThreadPoolExecutor

        stop = threading.Event()

        def place(chunk: list[tuple[str, str]]) -> None:
            for src, target in chunk:
                if stop.is_set():
                    return
                try:
                    self._link(src, target, link=link)
                except BaseException:
                    stop.set()
                    raise

        threads = min(4, os.cpu_count() or 1)
        size = max(64, len(todo) // (threads * 8))
        with ThreadPoolExecutor(threads) as pool:
            for future in [pool.submit(place, todo[i:i + size]) for i in range(0, len(todo), size)]:
                future.result()


def save_output(cache: Cache, root: Path, path: str, kind: OutputKind,
                cached: bool) -> tuple[PathRecord, list[FileMemoRow]]:
    """Hash a freshly produced output and (when cached) store it; returns its lock record and
    hash-memo rows for the parent to remember. With hardlink/symlink modes the workspace copy
    is replaced by a link to the stored object."""
    import time

    from pivot.hashing import hash_file, manifest_bytes, walk_files

    full = root / path
    now = time.time_ns()
    if full.is_dir():
        entries: list[DirEntry] = []
        rows: list[FileMemoRow] = []
        for rel, st in walk_files(str(full)):
            digest = cache.add_file(full / rel) if cached else hash_file(full / rel)
            entries.append(DirEntry(rel, digest, st.st_size))
            rows.append(FileMemoRow(f"{path}/{rel}", st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, now,
                                    digest))
        manifest = manifest_bytes(entries)
        digest = cache.add_bytes(manifest) if cached else hash_bytes(manifest)
        if cached and cache.link in ("hardlink", "symlink"):
            cache.checkout_dir(digest, full)
            rows = []
        return PathRecord(path, digest, True, kind), rows
    digest = cache.add_file(full) if cached else hash_file(full)
    if cached and cache.link in ("hardlink", "symlink"):
        cache.checkout_file(digest, full)
    st = os.stat(full)
    row = FileMemoRow(path, st.st_size, st.st_mtime_ns, st.st_ino, st.st_ctime_ns, now, digest)
    return PathRecord(path, digest, False, kind), [row]
