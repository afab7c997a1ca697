"""GPU placement (hpstudy.devices) with fake GPU ids: this machine has no GPU, locks are real."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import textwrap
from itertools import combinations
from pathlib import Path

import pytest

from hpstudy import devices
from hpstudy.devices import DeviceError

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def env(tmp_path):
    """A private environment: two fake GPUs, locks in tmp_path, no nvidia-smi on PATH."""
    (tmp_path / "bin").mkdir()
    yield {
        "HPSTUDY_GPUS": "0,1",
        "HPSTUDY_GPU_LOCK_DIR": str(tmp_path / "locks"),
        "PATH": str(tmp_path / "bin"),
    }
    devices.release_all()


# --------------------------------------------------------------------------- the machine's list


def test_pool_comes_from_the_environment(env):
    env["HPSTUDY_GPUS"] = " 2, 3,5 "
    assert devices.gpu_pool(env) == ["2", "3", "5"]


@pytest.mark.parametrize("text", ["0,0", "0;1", "gpu 0"])
def test_bad_pool_names_the_variable_and_the_value(env, text):
    env["HPSTUDY_GPUS"] = text
    with pytest.raises(DeviceError, match=rf"HPSTUDY_GPUS.*Received: {re.escape(repr(text))}"):
        devices.gpu_pool(env)


def test_pool_is_detected_with_nvidia_smi(env, tmp_path):
    del env["HPSTUDY_GPUS"]
    fake = tmp_path / "bin" / "nvidia-smi"
    fake.write_text(
        textwrap.dedent(
            """\
            #!/bin/sh
            [ "$1" = "-L" ] || exit 2
            echo "GPU 0: NVIDIA A100-SXM4-40GB (UUID: GPU-aaaa)"
            echo "  MIG 1g.5gb      Device  0: (UUID: MIG-bbbb)"
            echo "GPU 1: NVIDIA A100-SXM4-40GB (UUID: GPU-cccc)"
            """
        )
    )
    fake.chmod(0o755)
    assert devices.gpu_pool(env) == ["0", "1"]


def test_no_nvidia_smi_means_no_gpu(env):
    del env["HPSTUDY_GPUS"]
    assert devices.gpu_pool(env) == []
    assert devices.setup(threads=2, gpus=0, env=env) == "CPU"
    assert "CUDA_VISIBLE_DEVICES" not in env


def test_config_settings_reach_the_jobs_through_the_environment():
    env = {"HPSTUDY_GPUS": "7"}
    devices.export_settings([], 1, env)  # no gpu_ids in the config: the user's list stays
    assert env == {"HPSTUDY_GPUS": "7", "HPSTUDY_JOBS_PER_GPU": "1"}
    devices.export_settings([0, 2], 2, env)
    assert env == {"HPSTUDY_GPUS": "0,2", "HPSTUDY_JOBS_PER_GPU": "2"}
    assert devices.gpu_pool(env) == ["0", "2"] and devices.jobs_per_gpu(env) == 2


# --------------------------------------------------------------------------- setup()


def test_setup_keeps_the_schedulers_choice(env):
    env.update(CUDA_VISIBLE_DEVICES="1", SLURM_JOB_ID="77", SLURM_JOB_GPUS="3")
    device = devices.setup(threads=2, gpus=1, env=env)
    assert device == "GPU 1 (CUDA_VISIBLE_DEVICES from SLURM job 77, SLURM_JOB_GPUS=3)"
    env["SLURM_STEP_GPUS"] = "3"  # inside a job step (srun), as the SLURM plugin runs jobs
    assert devices.place(1, env).endswith("SLURM job 77, SLURM_STEP_GPUS=3)")
    del env["SLURM_JOB_GPUS"], env["SLURM_STEP_GPUS"]
    assert devices.place(1, env) == "GPU 1 (CUDA_VISIBLE_DEVICES from SLURM job 77)"
    assert env["CUDA_VISIBLE_DEVICES"] == "1"
    assert env["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    assert env["TF_NUM_INTRAOP_THREADS"] == "2"
    assert not Path(env["HPSTUDY_GPU_LOCK_DIR"]).exists()  # nothing claimed


def test_setup_claims_a_free_gpu_and_sets_the_environment(env):
    first, second = dict(env), dict(env)
    assert devices.setup(gpus=1, env=first).startswith("GPU 0 (claimed from 0,1")
    assert devices.setup(gpus=1, env=second).startswith("GPU 1 (claimed from 0,1")
    assert (first["CUDA_VISIBLE_DEVICES"], second["CUDA_VISIBLE_DEVICES"]) == ("0", "1")
    assert first["CUDA_DEVICE_ORDER"] == "PCI_BUS_ID"  # nvidia-smi's numbering
    assert first["TF_FORCE_GPU_ALLOW_GROWTH"] == "true"
    lock = Path(env["HPSTUDY_GPU_LOCK_DIR"]) / "gpu-0.lock"
    assert lock.read_text().startswith(f"pid {os.getpid()} ")
    with pytest.raises(DeviceError, match=r"No 1 free GPU\(s\) among \['0', '1'\]"):
        devices.claim(1, ["0", "1"], directory=env["HPSTUDY_GPU_LOCK_DIR"], wait=0)
    devices.release_all()
    assert devices.claim(1, ["0", "1"], directory=env["HPSTUDY_GPU_LOCK_DIR"], wait=0).gpus == ["0"]


def test_a_cpu_job_hides_the_gpus(env):
    assert devices.setup(gpus=0, env=env) == "CPU (the job asks for no GPU; GPUs 0,1 hidden)"
    assert env["CUDA_VISIBLE_DEVICES"] == ""


def test_asking_for_a_gpu_on_a_machine_without_one_fails_clearly(env):
    del env["HPSTUDY_GPUS"]
    with pytest.raises(DeviceError, match=r"asks for 1 GPU\(s\) but found none.*resources.gpu"):
        devices.setup(gpus=1, env=env)


def test_asking_for_more_gpus_than_the_machine_has_fails_at_once(env):
    with pytest.raises(DeviceError, match=r"asks for 3 GPU\(s\) but the machine's list has 2"):
        devices.setup(gpus=3, env=env)


def test_bad_jobs_per_gpu_names_the_variable(env):
    env["HPSTUDY_JOBS_PER_GPU"] = "0"
    with pytest.raises(DeviceError, match=r"HPSTUDY_JOBS_PER_GPU.*Received: '0'"):
        devices.setup(gpus=1, env=env)


# --------------------------------------------------------------------------- claims


def test_jobs_per_gpu_shares_cards_evenly(tmp_path):
    held = [devices.try_claim(1, ["0", "1"], 2, tmp_path) for _ in range(4)]
    assert [c.gpus for c in held] == [["0"], ["1"], ["0"], ["1"]]  # both cards before sharing
    assert held[2].locks == [tmp_path / "gpu-0.1.lock"]
    assert devices.try_claim(1, ["0", "1"], 2, tmp_path) is None
    held[1].release()
    assert devices.try_claim(1, ["0", "1"], 2, tmp_path).gpus == ["1"]


def test_a_multi_gpu_claim_takes_all_or_nothing(tmp_path):
    pool = ["0", "1", "2"]
    one = devices.try_claim(1, pool, 1, tmp_path)
    two = devices.try_claim(2, pool, 1, tmp_path)
    assert (one.gpus, two.gpus) == (["0"], ["1", "2"])
    two.release()
    again = devices.try_claim(1, pool, 1, tmp_path)  # GPU 1: only GPU 2 is free now
    assert again.gpus == ["1"]
    assert devices.try_claim(2, pool, 1, tmp_path) is None
    # the failed attempt let go of GPU 2 again
    assert devices.try_claim(1, pool, 1, tmp_path).gpus == ["2"]


WORKER = """
import os, sys, time
from pathlib import Path
from hpstudy import devices

events, lock_dir, total = Path(sys.argv[1]), sys.argv[2], int(sys.argv[3])

def claims():
    return [line.split()[1] for line in events.read_text().splitlines() if line.startswith("claim")]

got = devices.claim(1, ["0", "1"], directory=lock_dir, wait=300, poll=0.05)
with open(events, "a") as fh:  # O_APPEND: each line lands whole
    fh.write(f"claim {os.getpid()} {got.gpus[0]}\\n")
rank = claims().index(str(os.getpid())) + 1
# Hold until the next process has claimed too, so that holders overlap by construction.
deadline = time.monotonic() + 300
while len(claims()) < min(rank + 1, total):
    if time.monotonic() > deadline:
        sys.exit("gave up waiting for the next claim")
    time.sleep(0.05)
with open(events, "a") as fh:
    fh.write(f"release {os.getpid()} {got.gpus[0]}\\n")
"""


def test_concurrent_processes_never_share_a_gpu(tmp_path):
    """4 processes, 2 GPUs. Each logs "claim" after its lock is taken and "release" before it
    exits (which drops the lock), so the logged intervals lie inside the real ones."""
    events = tmp_path / "events.log"
    events.touch()
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", WORKER, str(events), str(tmp_path / "locks"), "4"],
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    for proc in procs:
        _, err = proc.communicate(timeout=600)
        assert proc.returncode == 0, err
    holders: dict[str, str] = {}
    most = 0
    used = set()
    lines = events.read_text().splitlines()
    for line in lines:
        what, pid, gpu = line.split()
        if what == "claim":
            assert gpu not in holders, f"GPU {gpu} claimed by {pid} while {holders[gpu]} held it"
            holders[gpu] = pid
            used.add(gpu)
            most = max(most, len(holders))
        else:
            assert holders.pop(gpu) == pid
    assert len(lines) == 8 and not holders
    assert most == 2 and used == {"0", "1"}


HOLDER = """
import sys, time
from hpstudy import devices

got = devices.claim(1, ["0", "1"], directory=sys.argv[1], wait=0)
print(got.gpus[0], flush=True)
time.sleep(600)
"""


def test_a_crashed_holders_gpu_becomes_free(tmp_path):
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout.readline().strip() == "0"
        assert devices.try_claim(2, ["0", "1"], 1, tmp_path) is None  # GPU 0 is held
    finally:
        holder.send_signal(signal.SIGKILL)  # no clean-up code runs
        holder.wait(timeout=60)
    both = devices.try_claim(2, ["0", "1"], 1, tmp_path)
    assert both is not None and both.gpus == ["0", "1"]


# --------------------------------------------------------------------------- through snakemake

# Four `train` jobs (one per experiment: fused experiments off), so that jobs overlap on 2 GPUs.
TINY = """\
title: GPU placement test
execution: {fuse_experiments: false}
datasets:
  digits: {source: digits, subsample: 120}
baselines:
  main:
    dataset: digits
    model: {hidden: [4]}
    training: {epochs: 1, batch_size: 64}
studies:
  lr:
    kind: ofat
    baseline: main
    factors:
      optimizer.learning_rate: [0.001, 0.05, 0.1]
resources:
  gpu_ids: [0, 1]
"""


def _interruptible() -> None:
    """Let `timeout -s INT` stop Snakemake (cancelling its jobs) even when the tests were started
    in the background, where SIGINT is ignored and that would be inherited."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@pytest.mark.e2e
def test_snakemake_gpu_profile_gives_concurrent_jobs_distinct_gpus(tmp_path):
    """`--profile profiles/gpu` (gpu=2) with --cores 4: 4 training jobs, 2 fake GPUs."""
    (tmp_path / "config.yaml").write_text(TINY)
    env = dict(os.environ, HPSTUDY_GPU_LOCK_DIR=str(tmp_path / "locks"))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    env.pop("HPSTUDY_GPUS", None)
    cmd = ["timeout", "-k", "60", "-s", "INT", "900", sys.executable, "-m", "snakemake"]
    cmd += ["--profile", str(ROOT / "profiles" / "gpu"), "--cores", "4", "--until", "train"]
    cmd += ["--snakefile", str(ROOT / "Snakefile"), "--directory", str(tmp_path)]
    cmd += ["--configfile", str(tmp_path / "config.yaml")]
    done = subprocess.run(
        cmd, cwd=ROOT, env=env, capture_output=True, text=True, preexec_fn=_interruptible
    )
    assert done.returncode == 0, done.stderr[-3000:]

    runs = []
    for metrics in sorted(tmp_path.glob("results/runs/*/r0/metrics.json")):
        host = json.loads(metrics.read_text())["host"]
        log = (metrics.parent / "train.log").read_text()
        claimed = re.search(r"claimed GPU (\S+) at ([0-9.]+)", log)
        assert claimed, log[-2000:]
        gpu = claimed.group(1)
        assert host["cuda_visible_devices"] == gpu
        assert host["device"].startswith(f"GPU {gpu} (claimed from 0,1")
        # Both lines are logged while the job holds the lock. (Not the outputs' mtimes:
        # Snakemake touches a job's outputs when it sees the job finish, after its locks went.)
        released = re.search(r"releasing GPU (\S+) at ([0-9.]+)", log)
        assert released and released.group(1) == gpu, log[-2000:]
        runs.append((gpu, float(claimed.group(2)), float(released.group(2))))
    assert len(runs) == 4
    assert {gpu for gpu, _, _ in runs} == {"0", "1"}
    overlapping = 0
    for (gpu_a, start_a, end_a), (gpu_b, start_b, end_b) in combinations(runs, 2):
        if start_a < end_b and start_b < end_a:
            overlapping += 1
            assert gpu_a != gpu_b, f"two concurrent jobs held GPU {gpu_a}: {runs}"
    assert overlapping >= 1, f"no two training jobs ran at the same time: {runs}"


# --------------------------------------------------------------------------- a shared lock directory

OTHER_UID = 65534  # "nobody": stands for another user of the machine
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="simulating another user needs root")


@pytest.fixture
def victim(tmp_path):
    """A file of ours that another user would like to make writable or overwrite."""
    path = tmp_path / "home" / ".bashrc"
    path.parent.mkdir()
    path.write_text("alias ls='ls --color'\n")
    path.chmod(0o600)
    return path


def untouched(victim) -> bool:
    st = victim.stat()
    return victim.read_text() == "alias ls='ls --color'\n" and (st.st_mode & 0o7777) == 0o600


def shared_dir(path: Path, owner: int, mode: int) -> Path:
    path.mkdir()
    os.chown(path, owner, owner)
    path.chmod(mode)
    return path


@as_root
def test_a_lock_dir_planted_by_another_user_is_refused_and_the_victim_untouched(tmp_path, victim):
    """The attack: another user creates the lock directory first (sticky and world-writable, as
    ours would be) and plants gpu-0.lock -> the victim's file."""
    locks = shared_dir(tmp_path / "locks", OTHER_UID, 0o1777)
    (locks / "gpu-0.lock").symlink_to(victim)
    os.lchown(locks / "gpu-0.lock", OTHER_UID, OTHER_UID)
    with pytest.raises(DeviceError) as info:
        devices.claim(1, ["0"], directory=locks, wait=0)
    message = str(info.value)
    assert str(locks) in message and f"owned by uid {OTHER_UID}" in message
    assert "owned by you" in message and "HPSTUDY_GPU_LOCK_DIR" in message
    assert untouched(victim)


@as_root
def test_a_planted_symlink_in_a_root_owned_sticky_dir_is_refused(tmp_path, victim):
    locks = shared_dir(tmp_path / "locks", 0, 0o1777)
    (locks / "gpu-0.lock").symlink_to(victim)
    os.lchown(locks / "gpu-0.lock", OTHER_UID, OTHER_UID)
    with pytest.raises(DeviceError, match=r"gpu-0\.lock is a symbolic link\. Expected a regular"):
        devices.try_claim(1, ["0", "1"], 1, locks)
    assert untouched(victim)
    assert devices.try_claim(1, ["1"], 1, locks).gpus == ["1"]  # the other card is still usable


def test_a_symlinked_lock_file_is_refused_in_our_own_dir(tmp_path, victim):
    locks = tmp_path / "locks"
    locks.mkdir()
    (locks / "gpu-0.lock").symlink_to(victim)
    with pytest.raises(DeviceError, match="is a symbolic link"):
        devices.try_claim(1, ["0"], 1, locks)
    assert untouched(victim)


def test_a_hard_linked_lock_file_is_refused(tmp_path, victim):
    locks = tmp_path / "locks"
    locks.mkdir(mode=0o700)
    os.link(victim, locks / "gpu-0.lock")  # same file system: tmp_path
    with pytest.raises(DeviceError, match=r"gpu-0\.lock is a regular file with 2 links"):
        devices.try_claim(1, ["0"], 1, locks)
    assert untouched(victim)


def test_a_symlinked_lock_dir_is_refused(tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "locks").symlink_to(real)
    with pytest.raises(DeviceError, match=r"locks is a symbolic link\. Expected the GPU lock dir"):
        devices.try_claim(1, ["0"], 1, tmp_path / "locks")
    assert list(real.iterdir()) == []


def test_a_group_writable_lock_dir_without_the_sticky_bit_is_refused(tmp_path):
    locks = tmp_path / "locks"
    locks.mkdir()
    locks.chmod(0o775)
    with pytest.raises(DeviceError) as info:
        devices.try_claim(1, ["0"], 1, locks)
    assert "has mode 775: writable by group or others without the sticky bit" in str(info.value)
    assert "HPSTUDY_GPU_LOCK_DIR" in str(info.value)
    assert list(locks.iterdir()) == []


@as_root
def test_a_root_owned_sticky_dir_is_used_and_another_users_lock_file_left_alone(tmp_path):
    locks = shared_dir(tmp_path / "locks", 0, 0o1777)
    theirs = locks / "gpu-0.lock"
    theirs.write_text("pid 1 on elsewhere\n")
    os.chown(theirs, OTHER_UID, OTHER_UID)
    theirs.chmod(0o644)
    held = devices.try_claim(2, ["0", "1"], 1, locks)
    assert held.gpus == ["0", "1"]  # their file can be locked through a read-only descriptor
    assert theirs.read_text() == "pid 1 on elsewhere\n" and theirs.stat().st_mode & 0o7777 == 0o644
    assert (locks / "gpu-1.lock").read_text().startswith(f"pid {os.getpid()} ")
    held.release()


def test_a_lock_dir_we_create_is_shared_through_the_sticky_bit(tmp_path):
    locks = tmp_path / "new" / "locks"
    devices.try_claim(1, ["0"], 1, locks).release()
    assert os.lstat(locks).st_mode & 0o7777 == 0o1777
    assert (locks / "gpu-0.lock").stat().st_mode & 0o777 == 0o644  # not writable by others


def test_a_fifo_in_place_of_a_lock_file_is_refused_without_hanging(tmp_path):
    locks = tmp_path / "locks"
    locks.mkdir()
    os.mkfifo(locks / "gpu-0.lock")
    with pytest.raises(DeviceError, match="is not a regular file"):
        devices.try_claim(1, ["0"], 1, locks)


# --------------------------------------------------------------------------- JAX's compilation cache


def test_the_jax_cache_is_created_private(tmp_path):
    env = {"TMPDIR": str(tmp_path)}
    devices.setup(backend="jax", env=env)
    cache = Path(env["JAX_COMPILATION_CACHE_DIR"])
    assert cache.parent == tmp_path and os.lstat(cache).st_mode & 0o7777 == 0o700


@pytest.mark.parametrize("planted", ["symlink", "other owner", "group-writable"])
def test_a_jax_cache_another_user_could_write_is_refused(tmp_path, planted):
    if planted == "other owner" and os.geteuid() != 0:
        pytest.skip("simulating another user needs root")
    cache = tmp_path / f"hpstudy-jax-cache-{os.getuid()}"
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir(mode=0o700)
    if planted == "symlink":
        cache.symlink_to(elsewhere)
        problem = "is a symbolic link"
    elif planted == "other owner":
        shared_dir(cache, OTHER_UID, 0o700)
        problem = f"is owned by uid {OTHER_UID}"
    else:
        cache.mkdir()
        cache.chmod(0o770)
        problem = "has mode 770: writable by group or others"
    with pytest.raises(DeviceError) as info:
        devices.setup(backend="jax", env={"TMPDIR": str(tmp_path)})
    message = str(info.value)
    assert f"{cache} {problem}. Expected JAX's compilation cache" in message
    assert "JAX_COMPILATION_CACHE_DIR" in message
