"""Benchmark of encrypted egress: our streamed age encryption against Debian's `age` binary.

Same input file, same run, each in its own child process so each peak RSS is its own:
  1. file -> /dev/null: our encryption (AgeCrypto, the code the service runs) vs `age -r`
     (both discard the output, so the figure compares encryption, not this disk's write speed);
  2. blob -> blob on Azurite: the whole sftp sealing step (read staging, encrypt, upload).

    .venv/bin/python benchmarks/bench_encrypt.py [--mib 1024] [--rounds 2]
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def child_ours(source: str, target: str, recipient: str) -> None:
    from shared.adapters.age_crypto import AgeCrypto

    with open(source, "rb") as src, open(target, "wb") as dst:
        AgeCrypto().encrypt(src, dst, recipient)


def child_pipeline(connection: str, mib: int) -> None:
    """Stage a file on Azurite, take it through intake, and time the sftp sealing step on it."""
    import hashlib
    import json

    from shared.bootstrap import build_staging_store
    from shared.settings import Settings
    from tests.support.packages import manifest_for

    # Sign-off is not what is measured: the manifest's decisions are trusted, so intake queues the
    # release at once and the package is ready to seal.
    settings = Settings(
        EGRESS_STORAGE=connection,
        LOCAL_SECRETS_DIR=tempfile.mkdtemp(),
        SAS_ALLOW_HTTP=True,
        CLASSIFICATION_SIGNOFF="manifest",
    )
    store = build_staging_store(settings)
    store.ensure_container(settings.staging_container)
    block = os.urandom(4 * 1024 * 1024)
    sha = hashlib.sha256()

    def chunks():
        for _ in range(mib // 4):
            sha.update(block)
            yield block

    store.write(settings.staging_container, "bench-enc/files/big.bin", chunks())
    manifest = manifest_for("bench-enc", {}, method="sftp")
    manifest["files"] = [{"path": "big.bin", "size": mib * 2**20, "sha256": sha.hexdigest()}]
    from shared.bootstrap import build_services

    services = build_services(settings)
    raw = json.dumps(manifest).encode()
    outcome = services.intake.process("bench-enc", raw)
    if outcome != "queued":
        raise SystemExit(f"intake: {outcome} {services.registry.get_package('bench-enc')}")
    start = time.monotonic()
    sealed = services.seal.seal("bench-enc", hashlib.sha256(raw).hexdigest())
    seconds = time.monotonic() - start
    if sealed is None or sealed.status != "sealed":
        raise SystemExit(f"sealing: {services.registry.get_package('bench-enc')}")
    print(f"{seconds:.3f}")


def run_child(args: list[str]) -> tuple[float, float, str]:
    """Run one child; return its wall time, its own peak RSS in MiB (wait4), and what it printed."""
    start = time.monotonic()
    child = subprocess.Popen(args, stdout=subprocess.PIPE, text=True)
    out = child.stdout.read() if child.stdout else ""
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        raise SystemExit(f"{args[0]} failed with exit {child.returncode}")
    return time.monotonic() - start, usage.ru_maxrss / 1024, out.strip()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--mib", type=int, default=1024)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--child", nargs="*", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        if args.child[0] == "ours":
            child_ours(*args.child[1:])
        else:
            child_pipeline(args.child[1], int(args.child[2]))
        return 0

    age = shutil.which("age")
    if not age:
        raise SystemExit("the `age` tool is needed: make install")
    from shared.adapters.age_crypto import AgeCrypto

    _, recipient = AgeCrypto().new_identity()
    work = Path(tempfile.mkdtemp(prefix="bench-enc-"))
    try:
        source = work / "input.bin"
        with source.open("wb") as out:
            block = os.urandom(4 * 1024 * 1024)
            for _ in range(args.mib // 4):
                out.write(block)
        age_times, our_times = [], []
        age_rss = our_rss = 0.0
        for _ in range(args.rounds):
            # both write to /dev/null: the comparison is of the encryption, not of this disk's write speed
            t, rss, _ = run_child([age, "-r", recipient, "-o", os.devnull, str(source)])
            age_times.append(t)
            age_rss = max(age_rss, rss)
            t, rss, _ = run_child([sys.executable, __file__, "--child", "ours", str(source), os.devnull, recipient])
            our_times.append(t)
            our_rss = max(our_rss, rss)
        print(f"file -> /dev/null, {args.mib} MiB, best of {args.rounds}:")
        print(
            f"  age binary : {min(age_times):.2f} s ({args.mib / min(age_times):.0f} MiB/s), peak RSS {age_rss:.0f} MiB"
        )
        print(
            f"  ours       : {min(our_times):.2f} s ({args.mib / min(our_times):.0f} MiB/s), peak RSS {our_rss:.0f} MiB"
        )
        print(f"  throughput ratio ours/age: {min(age_times) / min(our_times):.2f}  (target >= 0.90)")

        from tests.support.servers import start_azurite

        azurite = start_azurite()
        try:
            t, rss, inner = run_child(
                [sys.executable, __file__, "--child", "pipeline", azurite.connection_string(), str(args.mib)]
            )
            print(f"blob -> blob on Azurite (stage then sftp sealing step), {args.mib} MiB:")
            seconds = float(inner)
            print(f"  sealing step {seconds:.2f} s ({args.mib / seconds:.0f} MiB/s)")
            print(f"  peak RSS of that process {rss:.0f} MiB (target < 200 MiB)")
        finally:
            azurite.stop()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
