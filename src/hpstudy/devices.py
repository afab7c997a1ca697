"""Process set-up that must happen before TensorFlow is imported: threads, backend, devices.

GPU placement. Snakemake's `--resources gpu=N` only counts GPUs; it never says which card a job
should use (snakemake/snakemake#281). So a training job that asks for GPUs:

- keeps the `CUDA_VISIBLE_DEVICES` a scheduler already gave it (SLURM sets it per job);
- otherwise claims free GPUs from the machine's list, each with an exclusive `flock` on
  `<lock dir>/gpu-<id>.lock`, held as long as the process lives. The kernel drops the lock when
  the process ends, even on a crash or `kill -9`, so a GPU is never left claimed by a dead job.

The machine's list is `HPSTUDY_GPUS` ("0,1,2,3"; the workflow fills it from `resources.gpu_ids`),
else the GPUs that `nvidia-smi -L` lists. `HPSTUDY_JOBS_PER_GPU` (from `resources.jobs_per_gpu`)
lets several jobs share one card; `HPSTUDY_GPU_LOCK_DIR` moves the lock files. This module does
not import TensorFlow.

The lock directory is shared with other users, so it is checked the way trusted tools check such
places: it must be a real directory (not a symbolic link) owned by the current user or root, and
not writable by others unless its sticky bit is set (then only a file's owner can remove or
rename it). Lock files are opened without following symbolic links, must be regular files with a
single link, and only a lock file the user owns gets the holder line written into it. JAX's
compilation cache (native code that JAX loads) is a private directory, 0700, with the same checks.
"""

from __future__ import annotations

import atexit
import contextlib
import errno
import fcntl
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from pathlib import Path

ENV_GPUS = "HPSTUDY_GPUS"
ENV_JOBS_PER_GPU = "HPSTUDY_JOBS_PER_GPU"
ENV_LOCK_DIR = "HPSTUDY_GPU_LOCK_DIR"
# In /tmp rather than $XDG_RUNTIME_DIR: the GPUs belong to the machine, so every user's jobs
# must see the same locks. The directory is world-writable and sticky, like /tmp itself. Only one
# owned by root or by the user is used, so on a machine shared by several users an administrator
# creates it, e.g. with the systemd-tmpfiles line `d /tmp/hpstudy-gpu-locks 1777 root root -`.
DEFAULT_LOCK_DIR = "/tmp/hpstudy-gpu-locks"

_GPU_LINE = re.compile(r"^GPU (\d+):")


class DeviceError(RuntimeError):
    """A GPU request that cannot be met; the message says what was asked and what was found."""


def _log(message: str) -> None:
    print(f"[hpstudy.devices] {message}", file=sys.stderr, flush=True)


def parse_ids(text: str, source: str) -> list[str]:
    """Split "0, 1,2" into ["0", "1", "2"]; `source` names where the text came from, for errors."""
    ids = [part.strip() for part in text.split(",") if part.strip()]
    bad = [i for i in ids if not re.fullmatch(r"[A-Za-z0-9_.:-]+", i)]
    if bad or len(set(ids)) != len(ids):
        raise DeviceError(
            f"Expected {source} to be distinct GPU ids separated by commas, e.g. '0,1,2,3'. "
            f"Received: {text!r}"
        )
    return ids


def detect_gpus(path: str | None = None) -> list[str]:
    """The indices of the GPUs `nvidia-smi -L` lists ("GPU 0: ..." lines); [] without nvidia-smi."""
    exe = shutil.which("nvidia-smi", path=path)
    if exe is None:
        return []
    try:
        out = subprocess.run(
            [exe, "-L"], capture_output=True, text=True, timeout=30, check=True
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [m.group(1) for line in out.splitlines() if (m := _GPU_LINE.match(line.strip()))]


def gpu_pool(env: MutableMapping[str, str] | None = None) -> list[str]:
    """The machine's GPU ids: `HPSTUDY_GPUS` when set, else those `nvidia-smi -L` lists."""
    env = os.environ if env is None else env
    given = env.get(ENV_GPUS, "").strip()
    if given:
        return parse_ids(given, f"${ENV_GPUS}")
    return detect_gpus(env.get("PATH"))


def jobs_per_gpu(env: MutableMapping[str, str] | None = None) -> int:
    env = os.environ if env is None else env
    text = env.get(ENV_JOBS_PER_GPU, "1").strip() or "1"
    if not text.isdigit() or int(text) < 1:
        raise DeviceError(
            f"Expected ${ENV_JOBS_PER_GPU} (resources.jobs_per_gpu) to be an integer >= 1. "
            f"Received: {text!r}"
        )
    return int(text)


def lock_dir(env: MutableMapping[str, str] | None = None) -> Path:
    env = os.environ if env is None else env
    return Path(env.get(ENV_LOCK_DIR) or DEFAULT_LOCK_DIR)


def lock_path(directory: Path, gpu: str, slot: int = 0) -> Path:
    """Slot 0 is `gpu-<id>.lock`; the extra slots of a shared card are `gpu-<id>.<slot>.lock`."""
    return directory / (f"gpu-{gpu}.lock" if slot == 0 else f"gpu-{gpu}.{slot}.lock")


@dataclass(eq=False)
class Claim:
    """GPUs held by this process; the locks go with `release()`, the object, or the process."""

    gpus: list[str]
    locks: list[Path]
    claimed_at: float
    _fds: list[int] = field(default_factory=list, repr=False)

    def release(self) -> None:
        for fd in self._fds:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the descriptor drops its flock
        self._fds.clear()
        with contextlib.suppress(ValueError):
            _HELD.remove(self)

    def __del__(self) -> None:  # like a file: a claim nobody holds on to is let go
        try:
            self.release()
        except Exception:  # the interpreter is shutting down
            pass


# Claims made by setup() stay referenced here for the life of the process.
_HELD: list[Claim] = []


def _refuse(path: Path, problem: str, expected: str, fix: str) -> DeviceError:
    return DeviceError(f"{path} {problem}. Expected {expected}. {fix}")


_LOCK_DIR_FIX = (
    "If you made it, remove it; otherwise ask an administrator to create it (owned by root, "
    f"mode 1777), or set ${ENV_LOCK_DIR} to a directory of your own (your jobs then coordinate "
    "GPUs only with each other)."
)
_LOCK_FILE_FIX = (
    "Someone may have planted it: look at it (`ls -l`), remove it, "
    f"or set ${ENV_LOCK_DIR} to a directory of your own."
)


def _check_dir(path: Path, st: os.stat_result, what: str, fix: str, private: bool) -> None:
    """Refuse a directory through which another user could redirect or replace our files.

    `private`: owned by the user and writable by nobody else; otherwise root may own it too, and
    others may write into it if its sticky bit is set (as in /tmp).
    """
    if private:
        expected = (
            f"{what} to be a directory owned by you (uid {os.getuid()}), writable only by you"
        )
    else:
        expected = (
            f"{what} to be a directory owned by you (uid {os.getuid()}) or root, "
            "not writable by others unless its sticky bit is set (mode 1777, like /tmp)"
        )
    if stat.S_ISLNK(st.st_mode):
        raise _refuse(path, "is a symbolic link", expected, fix)
    if not stat.S_ISDIR(st.st_mode):
        raise _refuse(path, "is not a directory", expected, fix)
    if st.st_uid != os.getuid() and (private or st.st_uid != 0):
        raise _refuse(path, f"is owned by uid {st.st_uid}", expected, fix)
    mode = stat.S_IMODE(st.st_mode)
    if mode & (stat.S_IWGRP | stat.S_IWOTH) and (private or not mode & stat.S_ISVTX):
        sticky = "" if private else " without the sticky bit"
        raise _refuse(
            path, f"has mode {mode:o}: writable by group or others{sticky}", expected, fix
        )


def _open_lock_dir(directory: Path) -> int:
    """Create the lock directory (mode 1777) if needed, check it, and return a descriptor on it.

    Lock files are opened relative to the descriptor, so the directory that was checked is the
    one used, even if the path is renamed or replaced meanwhile.
    """
    if not os.path.lexists(directory):
        directory.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # another job made it first: checked below
            os.mkdir(directory, 0o700)
            os.chmod(directory, 0o1777)  # shared with other users' jobs, like /tmp
    what = "the GPU lock directory"
    _check_dir(directory, os.lstat(directory), what, _LOCK_DIR_FIX, private=False)
    fd = os.open(directory, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        _check_dir(directory, os.fstat(fd), what, _LOCK_DIR_FIX, private=False)
    except DeviceError:
        os.close(fd)
        raise
    return fd


# Never follow a symbolic link; a FIFO planted in place of a lock file must not hang the open.
_LOCK_FLAGS = os.O_NOFOLLOW | os.O_CLOEXEC | os.O_NONBLOCK


def _try_lock(path: Path, dir_fd: int) -> int | None:
    """Take an exclusive, non-blocking flock on `path`; return the descriptor, or None if held.

    `path`'s name is opened in the directory `dir_fd`. A symbolic link, a hard link (a file with
    more than one name) or anything but a regular file is refused. A lock file owned by another
    user is locked through a read-only descriptor and left as it is.
    """
    try:
        try:
            fd = os.open(path.name, os.O_RDWR | os.O_CREAT | _LOCK_FLAGS, 0o644, dir_fd=dir_fd)
        except PermissionError:  # another user's lock file: a read-only descriptor can flock too
            fd = os.open(path.name, os.O_RDONLY | _LOCK_FLAGS, dir_fd=dir_fd)
    except OSError as exc:
        link = exc.errno == errno.ELOOP  # what O_NOFOLLOW says of a symbolic link
        problem = "is a symbolic link" if link else f"cannot be opened ({exc.strerror})"
        raise _refuse(path, problem, "a regular lock file", _LOCK_FILE_FIX) from exc
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode) or st.st_nlink != 1:
            kind = "a regular file" if stat.S_ISREG(st.st_mode) else "not a regular file"
            raise _refuse(
                path,
                f"is {kind} with {st.st_nlink} links",
                "a regular lock file with one link (a hard link would make us lock, and write "
                "into, another file)",
                _LOCK_FILE_FIX,
            )
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    except BaseException:
        os.close(fd)
        raise
    if st.st_uid == os.getuid():  # who holds it, for a person looking at the lock dir
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o644)
            os.ftruncate(fd, 0)
            holder = f"pid {os.getpid()} on {socket.gethostname()} since {time.time():.3f}\n"
            os.write(fd, holder.encode())
    return fd


def try_claim(n: int, pool: list[str], per_gpu: int, directory: Path) -> Claim | None:
    """Lock `n` distinct GPUs of `pool` now, or none at all (None).

    Slots are tried slot-major (every card's first slot before any card's second), so shared
    cards fill up evenly. Taking all or nothing means two jobs never deadlock on half a claim.
    """
    dir_fd = _open_lock_dir(directory)
    gpus: list[str] = []
    locks: list[Path] = []
    fds: list[int] = []
    try:
        for slot in range(per_gpu):
            for gpu in pool:
                if gpu in gpus:
                    continue
                path = lock_path(directory, gpu, slot)
                fd = _try_lock(path, dir_fd)
                if fd is None:
                    continue
                gpus.append(gpu)
                locks.append(path)
                fds.append(fd)
                if len(gpus) == n:
                    held, fds = Claim(gpus, locks, time.time(), fds), []
                    return held
    finally:  # a partial claim (or a refused lock file) lets go of what it took
        os.close(dir_fd)
        for fd in fds:
            os.close(fd)
    return None


def claim(
    n: int,
    pool: list[str],
    per_gpu: int = 1,
    directory: Path | str = DEFAULT_LOCK_DIR,
    wait: float | None = None,
    poll: float = 0.5,
    log: Callable[[str], None] = _log,
) -> Claim:
    """Lock `n` free GPUs of `pool`, waiting up to `wait` seconds (None: as long as it takes)."""
    if n > len(pool):
        raise DeviceError(
            f"The job asks for {n} GPU(s) but the machine's list has {len(pool)}: {pool}. "
            f"Set ${ENV_GPUS} or resources.gpu_ids, or ask for fewer (resources.gpu)."
        )
    directory = Path(directory)
    deadline = None if wait is None else time.monotonic() + wait
    waited = False
    while True:
        got = try_claim(n, pool, per_gpu, directory)
        if got is not None:
            return got
        if deadline is not None and time.monotonic() >= deadline:
            raise DeviceError(
                f"No {n} free GPU(s) among {pool} ({per_gpu} job(s) per GPU) after {wait} s; "
                f"locks in {directory}"
            )
        if not waited:
            log(f"all of GPUs {pool} are taken ({per_gpu} job(s) per GPU); waiting for one")
            waited = True
        time.sleep(poll)


def place(gpus: int, env: MutableMapping[str, str] | None = None) -> str:
    """Choose this job's devices and set `CUDA_VISIBLE_DEVICES` in `env`; return a description.

    A scheduler's choice wins; a job that asks for no GPU sees none (so CPU jobs never take
    memory on a card that a GPU job was given); otherwise free GPUs are claimed and locked.
    """
    env = os.environ if env is None else env
    visible = env.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        if visible.strip() in ("", "-1"):
            return "CPU (CUDA_VISIBLE_DEVICES is empty)"
        _gpu_env(env)
        job = env.get("SLURM_JOB_ID")
        if not job:
            return f"GPU {visible} (CUDA_VISIBLE_DEVICES from the environment)"
        # The node's own GPU numbers (with cgroup device limits CUDA sees them renumbered from
        # 0): a job step (srun, as the plugin runs each job) has SLURM_STEP_GPUS.
        name = next((n for n in ("SLURM_STEP_GPUS", "SLURM_JOB_GPUS") if env.get(n)), None)
        node = f", {name}={env[name]}" if name else ""
        return f"GPU {visible} (CUDA_VISIBLE_DEVICES from SLURM job {job}{node})"
    pool = gpu_pool(env)
    if gpus <= 0:
        if pool:
            env["CUDA_VISIBLE_DEVICES"] = ""
            return f"CPU (the job asks for no GPU; GPUs {','.join(pool)} hidden)"
        return "CPU"
    if not pool:
        raise DeviceError(
            f"The job asks for {gpus} GPU(s) but found none: ${ENV_GPUS} and resources.gpu_ids "
            "are empty and `nvidia-smi -L` lists no GPU. Set resources.gpu to 0 to train on the CPU."
        )
    per_gpu = jobs_per_gpu(env)
    got = claim(gpus, pool, per_gpu, lock_dir(env))
    _HELD.append(got)
    atexit.register(_release_at_exit, got)
    env["CUDA_VISIBLE_DEVICES"] = ",".join(got.gpus)
    # nvidia-smi numbers GPUs by PCI bus; CUDA's default order may differ.
    env.setdefault("CUDA_DEVICE_ORDER", "PCI_BUS_ID")
    _gpu_env(env)
    _log(
        f"claimed GPU {','.join(got.gpus)} at {got.claimed_at:.6f} "
        f"(locks {', '.join(map(str, got.locks))})"
    )
    return f"GPU {','.join(got.gpus)} (claimed from {','.join(pool)}, {per_gpu} job(s) per GPU)"


def _release_at_exit(held: Claim) -> None:
    # Logged while the lock is still held, so the log brackets the time the job had the card.
    if held._fds:
        _log(f"releasing GPU {','.join(held.gpus)} at {time.time():.6f}")
        held.release()


def _gpu_env(env: MutableMapping[str, str]) -> None:
    # Allocate GPU memory as needed instead of all at once, so jobs can share a card.
    env.setdefault("TF_FORCE_GPU_ALLOW_GROWTH", "true")
    env.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")  # the same for JAX


def export_settings(
    gpu_ids: list, per_gpu: int, env: MutableMapping[str, str] | None = None
) -> None:
    """Hand the config's `resources.gpu_ids` and `jobs_per_gpu` to the jobs, which inherit `env`.

    An empty `gpu_ids` leaves `HPSTUDY_GPUS` as the user set it (or unset: nvidia-smi decides).
    """
    env = os.environ if env is None else env
    if gpu_ids:
        env[ENV_GPUS] = ",".join(str(i) for i in gpu_ids)
    env[ENV_JOBS_PER_GPU] = str(per_gpu)


def release_all() -> None:
    """Drop every claim this process made (for tests; a job simply exits)."""
    for held in list(_HELD):
        held.release()


def _jax_env(threads: int, env: MutableMapping[str, str]) -> None:
    """JAX's thread pool and its on-disk cache of compiled steps, shared by the jobs of a machine.

    Without the cache every job compiles its training step again (seconds, more than a whole
    small run's epochs; see benchmarks/RESULTS.md). It lives in the machine's temporary directory
    because a step compiled for one node's CPU must not be loaded on another's. Cached programs
    are the ones XLA would compile again, so results do not depend on the cache.
    """
    if threads == 1:  # XLA's CPU client otherwise starts one thread per core
        flags = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {flags}".strip()
    cache = Path(env.get("TMPDIR") or "/tmp") / f"hpstudy-jax-cache-{os.getuid()}"
    env.setdefault("JAX_COMPILATION_CACHE_DIR", str(cache))
    _private_dir(Path(env["JAX_COMPILATION_CACHE_DIR"]))
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
    env.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def _private_dir(path: Path) -> None:
    """Create `path` with mode 0700 if needed; refuse one another user could write or redirect.

    JAX loads what its compilation cache holds as native code: a cache another user can write
    into, or point elsewhere with a symbolic link, would run their code in our jobs.
    """
    if not os.path.lexists(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):  # made meanwhile: checked below
            os.mkdir(path, 0o700)
    fix = (
        "Remove it if it is yours (it is only a cache), or set JAX_COMPILATION_CACHE_DIR "
        "(or TMPDIR) to a directory of your own."
    )
    _check_dir(path, os.lstat(path), "JAX's compilation cache", fix, private=True)


def setup(
    threads: int = 1,
    backend: str = "tensorflow",
    gpus: int = 0,
    env: MutableMapping[str, str] | None = None,
) -> str:
    """Fix the thread pools, the Keras backend and the devices; return the device description.

    TensorFlow reads these variables once, when it starts, so this runs before any import of
    keras or tensorflow. One intra-op thread per Snakemake thread keeps parallel jobs from
    oversubscribing the cores. `gpus` is the number of GPUs the job asked for (its `gpu`
    resource).
    """
    env = os.environ if env is None else env
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    env["KERAS_BACKEND"] = backend
    env["TF_NUM_INTRAOP_THREADS"] = str(threads)
    env["TF_NUM_INTEROP_THREADS"] = str(max(1, min(2, threads)))
    env.setdefault("OMP_NUM_THREADS", str(threads))
    if backend == "jax":
        _jax_env(threads, env)
    if env is os.environ and "tensorflow" in sys.modules:
        _log("TensorFlow was imported before devices.setup(): the device settings may not apply")
    return place(gpus, env)


# Facts about the host and the devices a job computed on, for metrics.json -------------------


def _version(dist: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def host_facts(device: str) -> dict:
    """Where a job ran: host, device placement, versions and the backend's compute devices.

    Call it after Keras is imported (by the training job): it reads Keras' backend.
    """
    import keras

    # The installed version, without importing TensorFlow into a run on another backend.
    tf_version = _version("tensorflow") or _version("tensorflow-cpu")
    return {
        "host": socket.gethostname(),
        "device": device,
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "slurm_job_id": os.environ.get("SLURM_JOB_ID"),
        "python": sys.version.split()[0],
        "tensorflow": tf_version,
        "jax": _version("jax"),
        "keras": keras.__version__,
        "keras_backend": keras.backend.backend(),
        "compute_devices": compute_devices(),
    }


def compute_devices() -> list[str]:
    """The devices the backend actually computes on (a CPU-only build ignores visible GPUs)."""
    import keras

    backend = keras.backend.backend()
    if backend == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_logical_devices() if d.device_type in ("CPU", "GPU")]
    if backend == "jax":
        import jax

        return [str(d) for d in jax.devices()]
    return [backend]
