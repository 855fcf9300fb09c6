"""Which code executes an inference's instructions, under the emulated device.

The plugin's blocks=PATH file (devices/insn_count.c) names, for every translated block, the mapped file and the
offset of its first instruction; the file's symbol table names the function. XNNPACK microkernels are named
xnn_<datatype>_<op>_..._ukernel_..., which gives their family. Used by benchmarks/pi4_estimate.py --attribution
to compare cost models over microkernel families with the instruction-class ones (devices/calibration.py).
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path

FAMILIES = ("gemm", "dwconv", "elementwise", "transpose", "xnnpack-other", "runtime", "outside")


def microkernel_family(symbol: str) -> str:
    """The family of a function in the runtime's library: gemm (GEMM and IGEMM microkernels: convolutions
    and fully connected), dwconv, transpose (layout changes), elementwise (every other microkernel:
    activations, adds, multiplies, reductions), xnnpack-other (XNNPACK outside its microkernels: set-up,
    indirection, packing) or runtime (the interpreter and the rest of the library)."""
    s = symbol.lower()
    if "ukernel" in s:
        return ("gemm" if "gemm" in s else "dwconv" if "dwconv" in s else
                "transpose" if "transpose" in s else "elementwise")
    if s.startswith(("xnn_", "pthreadpool")):
        return "xnnpack-other"
    return "runtime"


def _load_segments(path: Path) -> list[tuple[int, int, int]]:
    """(file offset, virtual address, size) of an ELF file's PT_LOAD segments (64-bit little-endian)."""
    import struct

    with open(path, "rb") as f:
        head = f.read(64)
        if head[:4] != b"\x7fELF" or head[4] != 2:
            return []
        phoff, = struct.unpack_from("<Q", head, 32)
        phentsize, phnum = struct.unpack_from("<HH", head, 54)
        f.seek(phoff)
        table = f.read(phentsize * phnum)
    out = []
    for i in range(phnum):
        p_type, _, p_offset, p_vaddr, _, p_filesz = struct.unpack_from("<IIQQQQ", table, i * phentsize)
        if p_type == 1:
            out.append((p_offset, p_vaddr, p_filesz))
    return out


def _function_symbols(path: Path) -> list[tuple[int, str]]:
    """(address, name) of a file's defined functions, sorted; empty without binutils' nm."""
    import shutil
    import subprocess

    nm = shutil.which("nm")
    if nm is None:
        return []
    syms = []
    for flags in (["--defined-only"], ["-D", "--defined-only"]):  # .symtab, else the dynamic table
        out = subprocess.run([nm, *flags, str(path)], capture_output=True, text=True).stdout
        for line in out.splitlines():
            parts = line.split()
            if len(parts) >= 3 and parts[1] in "tTwWiI":
                syms.append((int(parts[0], 16), parts[2]))
        if syms:
            break
    return sorted(syms)


def attribute_blocks(blocks_file: str | Path, runtime_library: str = "libpywrap_litert_common.so") -> dict:
    """Instructions by library and, inside `runtime_library`, by microkernel family (FAMILIES; code in any
    other file or in none is "outside"). Returns {"total", "libraries": {name: n}, "families": {name: n},
    "symbolized": bool}; symbolized is False when nm is missing (then the runtime library is "runtime")."""
    import bisect

    per_file: dict[str, list[tuple[int, int]]] = {}
    for line in Path(blocks_file).read_text().splitlines():
        parts = line.split(" ", 2)
        per_file.setdefault(parts[2] if len(parts) > 2 else "", []).append((int(parts[0], 16), int(parts[1])))
    libraries, families, symbolized = Counter(), Counter(), True
    for path, blocks in per_file.items():
        name = Path(path).name if path else "(no file)"
        libraries[name] += sum(n for _, n in blocks)
        if name != runtime_library:
            families["outside"] += sum(n for _, n in blocks)
            continue
        segments, syms = _load_segments(Path(path)), _function_symbols(Path(path))
        symbolized = symbolized and bool(syms)
        addrs = [a for a, _ in syms]
        for offset, n in blocks:
            vaddr = next((offset - o + v for o, v, size in segments if o <= offset < o + size), offset)
            i = bisect.bisect_right(addrs, vaddr) - 1
            families[microkernel_family(syms[i][1]) if i >= 0 else "runtime"] += n
    return {"total": sum(libraries.values()), "libraries": dict(libraries.most_common()),
            "families": {f: families.get(f, 0) for f in FAMILIES}, "symbolized": symbolized}
