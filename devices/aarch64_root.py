"""A Debian arm64 root folder that qemu-aarch64 runs the bundle runner from, built without chroot.

The recipe (measured; see the "Device facts" in the project's dependency notes):

1. ``debootstrap --arch=arm64 --foreign --variant=minbase --include=python3 bookworm TMP MIRROR``
   downloads the arm64 packages (and unpacks the essential ones) without running any guest code;
   MIRROR is the Debian mirror apt already uses on this machine.
2. every downloaded .deb is unpacked into TMP with ``dpkg-deb -x`` (the --foreign second stage, which
   would need a chroot, is never run: no maintainer scripts, no dpkg database, and none are needed).
3. aarch64 wheels of numpy, onnxruntime and ai-edge-litert go to TMP/opt/site through the host's pip
   with ``--only-binary=:all:`` and every platform tag spelled out (older pip does not expand them;
   without ``manylinux_2_27_aarch64`` ai-edge-litert silently falls back to 1.4).
4. TMP/proc/cpuinfo becomes a regular file with a Cortex-A72 cpuinfo: under ``qemu-aarch64 -L ROOT``
   the guest reads it instead of the host's x86 one, which makes onnxruntime's cpuinfo crash.
5. the guest Python imports all three packages once (under qemu) and their versions go into a marker
   file; then TMP is renamed to ROOT. A folder without a matching marker is never used.
6. the guest Python compiles its standard library and the wheels to bytecode, into ROOT/var/cache/
   edgebench-pycache (PYTHONPYCACHEPREFIX; ``ensure_bytecode``). Guests never write bytecode themselves
   (PYTHONDONTWRITEBYTECODE): without it every start compiled numpy and onnxruntime from source under
   emulation, 3.7 s for ``import numpy, onnxruntime`` against 1.6 s with it (measured).

About 60 s and 510 MB the first time; afterwards ``ensure_root`` only reads the marker.
"""
from __future__ import annotations

import fcntl
import json
import os
import re
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Optional

from edgebench.types import EdgebenchError

SUITE = "bookworm"
DEFAULT_ROOT = Path.home() / ".cache" / "edgebench" / f"aarch64-root-{SUITE}"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
MARKER = ".edgebench-root.json"
RECIPE_VERSION = 1  # bump when the recipe changes, so old caches are rebuilt
GUEST_SITE = "/opt/site"  # where the wheels live, as the guest sees it (PYTHONPATH)
PYCACHE = "var/cache/edgebench-pycache"  # in the root: the guest's compiled bytecode (ensure_bytecode)
PYCACHE_DONE = ".complete"
WHEEL_PACKAGES = ("numpy", "onnxruntime", "ai-edge-litert")
PLATFORM_TAGS = ("manylinux_2_27_aarch64", "manylinux_2_17_aarch64", "manylinux2014_aarch64")

# A Raspberry Pi 4 (BCM2711, 4 x Cortex-A72 r0p3) as its kernel reports it: implementer 0x41 (ARM),
# part 0xd08 (Cortex-A72). onnxruntime's cpuinfo library parses these fields.
CORTEX_A72_CPUINFO = "".join(
    f"processor\t: {i}\n"
    "BogoMIPS\t: 108.00\n"
    "Features\t: fp asimd evtstrm crc32 cpuid\n"
    "CPU implementer\t: 0x41\n"
    "CPU architecture: 8\n"
    "CPU variant\t: 0x0\n"
    "CPU part\t: 0xd08\n"
    "CPU revision\t: 3\n\n"
    for i in range(4)
) + "Hardware\t: BCM2835\nModel\t\t: Raspberry Pi 4 Model B Rev 1.4\n"

# Host tool -> the Debian package that provides it, for one-line errors.
TOOLS = {"debootstrap": "debootstrap", "dpkg-deb": "dpkg", "qemu-aarch64": "qemu-user"}


@dataclass(frozen=True)
class Root:
    """A built root: where it is and what is in it (the marker's content)."""

    path: Path
    python: Path  # host path of the guest interpreter, e.g. ROOT/usr/bin/python3.11
    versions: dict  # guest python, numpy, onnxruntime, ai_edge_litert

    @property
    def size_bytes(self) -> int:
        total = 0
        for folder, _, files in os.walk(self.path):
            total += sum(os.lstat(os.path.join(folder, f)).st_size for f in files)
        return total


def require_tool(tool: str, package: str = "") -> str:
    """Absolute path of a host tool, or one clear line naming the Debian package to install."""
    path = shutil.which(tool) or shutil.which(tool, path="/usr/sbin:/sbin:/usr/bin")
    if path is None:
        raise EdgebenchError(f"'{tool}' is not installed: apt-get install {package or TOOLS.get(tool, tool)}")
    return path


def apt_mirror(apt_dir: Path = Path("/etc/apt")) -> str:
    """The Debian mirror apt already uses here (main archive, not security), else deb.debian.org."""
    texts = []
    for f in [apt_dir / "sources.list", *sorted((apt_dir / "sources.list.d").glob("*"))]:
        if f.suffix in (".list", ".sources") or f.name == "sources.list":
            try:
                texts.append((f.suffix, f.read_text()))
            except OSError:
                continue
    for suffix, text in texts:
        if suffix == ".sources":  # deb822 stanzas
            for stanza in re.split(r"\n\s*\n", text):
                fields = dict(re.findall(r"^(\w[\w-]*):\s*(.*)$", stanza, flags=re.M))
                suites = fields.get("Suites", "").split()
                if "deb" in fields.get("Types", "").split() and SUITE in suites:
                    for uri in fields.get("URIs", "").split():
                        if "security" not in uri:
                            return uri.rstrip("/")
        else:
            for line in text.splitlines():
                parts = line.split("#", 1)[0].split()
                if len(parts) >= 3 and parts[0] == "deb":
                    uri_at = 1
                    if parts[1].startswith("["):  # skip [arch=... signed-by=...] options, spaces and all
                        while uri_at < len(parts) and not parts[uri_at].endswith("]"):
                            uri_at += 1
                        uri_at += 1
                    if uri_at + 1 < len(parts) and parts[uri_at + 1] == SUITE and "security" not in parts[uri_at]:
                        return parts[uri_at].rstrip("/")
    return DEFAULT_MIRROR


def default_wheels() -> tuple:
    """The newest aarch64 wheels of each runtime. Not pinned to the host's versions: the host's
    onnxruntime may be a release with no aarch64 wheel (1.32 on x86 while aarch64 stops at 1.28).
    The guest's versions are recorded in the marker and in every measurement."""
    return WHEEL_PACKAGES


def _progress(msg: str) -> None:
    print(f"[aarch64-root] {msg}", file=sys.stderr, flush=True)


def _run(cmd: list, what: str, timeout: float = 1800, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout, **kw)
    if proc.returncode != 0:
        tail = " ".join((proc.stderr or proc.stdout).strip().split())[-400:]
        raise EdgebenchError(f"{what} failed (exit {proc.returncode}): {tail}")
    return proc


def guest_env(extra: Optional[dict] = None, root: Path | str | None = None) -> dict:
    """Environment for a guest process: wheels on PYTHONPATH, every thread pool at one thread, fixed hash
    seed (repeatable instruction counts), and nothing from the host's Python leaking in. With `root`, the
    guest reads the bytecode ensure_bytecode compiled there (a host path: qemu's -L finds no such path
    inside the root and falls back to the host's, which is the root's own folder)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV", "QEMU_"))}
    env.update({
        "PYTHONPATH": GUEST_SITE,
        "PYTHONHASHSEED": "0",
        "PYTHONDONTWRITEBYTECODE": "1",  # the root stays read-only in practice; no .pyc races
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",  # numpy's OpenBLAS would start idle worker threads per host core
        "LC_ALL": "C.UTF-8",
    })
    if root is not None and (Path(root) / PYCACHE / PYCACHE_DONE).exists():
        env["PYTHONPYCACHEPREFIX"] = str(Path(root).resolve() / PYCACHE)
    env.update(extra or {})
    return env


_COMPILE = (
    "import compileall, re, sys, sysconfig\n"
    "skip = re.compile(r'[/](tests?|idlelib|tkinter|lib2to3|ensurepip|turtledemo|f2py|distutils|transformers)[/]')\n"
    "ok = [compileall.compile_dir(d, quiet=1, rx=skip) for d in (sysconfig.get_paths()['stdlib'], sys.argv[1])]\n"
    "print(sum(ok), 'of', len(ok))\n"
)


def ensure_bytecode(root: Root, qemu: str, progress: Callable[[str], None] = _progress, cpu: str = "cortex-a72"):
    """Compile the guest's standard library and wheels once, with the guest's own Python, into ROOT/PYCACHE
    (the bytecode holds the source paths as the guest sees them, so it is compiled where the root now lies;
    a moved root compiles again). Done once: a marker file says so. Bytecode only spares the guest's start
    (2 s of compiling per process under emulation): a failure is reported, marked as done (not retried at every
    start; whatever was compiled is used, the rest compiles in each guest as before) and never fatal."""
    target = Path(root.path).resolve() / PYCACHE
    if (target / PYCACHE_DONE).exists():
        return
    with open(Path(root.path).parent / f".{Path(root.path).name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / PYCACHE_DONE).exists():
            return
        t0 = time.monotonic()
        progress(f"compiling the guest's Python bytecode into {target} (once)")
        env = {k: v for k, v in guest_env().items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(target)
        error = None
        try:
            _run([qemu, "-L", root.path, "-cpu", cpu, root.python, "-c", _COMPILE, GUEST_SITE],
                 "compiling the guest's bytecode", timeout=900, env=env)
        except (EdgebenchError, subprocess.TimeoutExpired, OSError) as exc:
            error = str(exc)[:300]
            progress(f"bytecode not (fully) compiled ({error}); guests compile the rest at every start")
        target.mkdir(parents=True, exist_ok=True)
        (target / PYCACHE_DONE).write_text(json.dumps({"compiled_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                                                       "root": str(Path(root.path).resolve()), "error": error}))
        if error is None:
            progress(f"bytecode compiled in {time.monotonic() - t0:.0f} s")


_PROBE = (
    "import json, platform, importlib\n"
    "out = {'python': platform.python_version(), 'machine': platform.machine()}\n"
    "for n in ('numpy', 'onnxruntime', 'ai_edge_litert'):\n"
    "    m = importlib.import_module(n)\n"
    "    out[n] = getattr(m, '__version__', 'installed')\n"
    "from ai_edge_litert.interpreter import Interpreter\n"
    "print(json.dumps(out))\n"
)


def guest_python(root: Path) -> Path:
    found = sorted(root.glob("usr/bin/python3.[0-9]*"), key=lambda p: len(p.name))
    found = [p for p in found if re.fullmatch(r"python3\.\d+", p.name)]
    if not found:
        raise EdgebenchError(f"no python3.X interpreter in {root}/usr/bin: the root is incomplete")
    return found[0]


def probe(root: Path, qemu: str, cpu: str = "cortex-a72", timeout: float = 600) -> dict:
    """Import the runtimes once inside the guest; their versions, as the guest reports them."""
    py = guest_python(root)
    proc = _run([qemu, "-L", root, "-cpu", cpu, py, "-c", _PROBE], "importing the runtimes under qemu-aarch64",
                timeout=timeout, env=guest_env(root=root))
    return json.loads(proc.stdout.strip().splitlines()[-1])


def read_marker(root: Path) -> Optional[dict]:
    try:
        return json.loads((Path(root) / MARKER).read_text())
    except (OSError, ValueError):
        return None


def ensure_root(
    root: Path | str | None = None,
    mirror: str | None = None,
    wheels: tuple | None = None,
    progress: Callable[[str], None] = _progress,
    force: bool = False,
) -> Root:
    """The arm64 root at `root` (default ~/.cache/edgebench/aarch64-root-bookworm), built if missing.

    Idempotent: a root whose marker matches this recipe and these wheel specs is returned as is.
    Atomic: the root is built in a sibling temporary folder and renamed into place at the end, so an
    interrupted build never leaves a half root behind; a lock file serializes concurrent builders.
    """
    root = Path(root).expanduser() if root else DEFAULT_ROOT
    wheels = tuple(wheels) if wheels else default_wheels()
    want = {"recipe": RECIPE_VERSION, "suite": SUITE, "wheels": list(wheels)}

    def usable(marker):
        return marker is not None and all(marker.get(k) == v for k, v in want.items())

    marker = read_marker(root)
    if usable(marker) and not force:
        built = Root(root, root / marker["python"], marker["versions"])
    else:
        root.parent.mkdir(parents=True, exist_ok=True)
        with open(root.parent / f".{root.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            marker = read_marker(root)
            if usable(marker) and not force:  # another process built it while we waited
                built = Root(root, root / marker["python"], marker["versions"])
            else:
                built = _build(root, mirror or apt_mirror(), wheels, want, progress)
    qemu = shutil.which("qemu-aarch64")
    if qemu is not None:
        ensure_bytecode(built, qemu, progress)
    return built


def _build(root: Path, mirror: str, wheels: tuple, want: dict, progress) -> Root:
    debootstrap = require_tool("debootstrap")
    require_tool("dpkg-deb")
    qemu = require_tool("qemu-aarch64")
    cmd_prefix = []
    if os.geteuid() != 0:
        if shutil.which("fakeroot") is None:
            raise EdgebenchError("building the arm64 root runs debootstrap, which needs root or fakeroot: "
                                 "run as root or apt-get install fakeroot")
        cmd_prefix = ["fakeroot"]

    t0 = time.monotonic()
    tmp = root.parent / f".{root.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        progress(f"debootstrap arm64 {SUITE} (minbase + python3) from {mirror} into {tmp}")
        _run([*cmd_prefix, debootstrap, "--arch=arm64", "--foreign", "--variant=minbase", "--include=python3",
              SUITE, tmp, mirror], "debootstrap")
        debs = sorted((tmp / "var/cache/apt/archives").glob("*.deb"))
        if not debs:
            raise EdgebenchError(f"debootstrap left no .deb files in {tmp}/var/cache/apt/archives")
        progress(f"unpacking {len(debs)} packages with dpkg-deb -x")
        for deb in debs:
            _run(["dpkg-deb", "-x", deb, tmp], f"dpkg-deb -x {deb.name}")
            deb.unlink()  # the archives are not needed once unpacked (about 60 MB)

        progress(f"pip: aarch64 wheels {' '.join(wheels)} -> {GUEST_SITE}")
        pip = [sys.executable, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", "--no-compile",
               "--target", tmp / GUEST_SITE.lstrip("/"), "--only-binary=:all:",
               "--python-version", "3.11", "--implementation", "cp"]
        for tag in PLATFORM_TAGS:
            pip += ["--platform", tag]
        _run([*pip, *wheels], "pip install of the aarch64 wheels")

        progress("writing a Cortex-A72 /proc/cpuinfo (onnxruntime needs an ARM one)")
        proc_dir = tmp / "proc"
        shutil.rmtree(proc_dir, ignore_errors=True)
        proc_dir.mkdir()
        (proc_dir / "cpuinfo").write_text(CORTEX_A72_CPUINFO)

        progress("checking the guest: python imports numpy, onnxruntime, ai_edge_litert under qemu-aarch64")
        versions = probe(tmp, qemu)
        if versions.get("machine") != "aarch64":
            raise EdgebenchError(f"the guest python reports machine {versions.get('machine')!r}, not aarch64")
        python_rel = guest_python(tmp).relative_to(tmp)
        marker = {**want, "mirror": mirror, "python": str(python_rel), "versions": versions,
                  "built_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "build_s": round(time.monotonic() - t0, 1)}
        (tmp / MARKER).write_text(json.dumps(marker, indent=2))

        if root.exists() or root.is_symlink():  # an old or foreign folder: move it aside, then drop it
            old = root.parent / f".{root.name}.old-{os.getpid()}"
            root.rename(old)
            shutil.rmtree(old, ignore_errors=True)
        tmp.rename(root)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    built = Root(root, root / python_rel, versions)
    progress(f"ready in {time.monotonic() - t0:.0f} s: {root} ({built.size_bytes / 1e6:.0f} MB), " +
             ", ".join(f"{k} {v}" for k, v in versions.items()))
    return built
