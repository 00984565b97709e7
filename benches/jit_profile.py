"""Helper of benches/jit_profile.sh: copy a JIT function's bytes out of a
running process, and fold perf samples onto its disassembly."""
import collections
import re
import sys


def dump(pid, addr, size, _name, out):
    addr, size = int(addr, 16), int(size, 16)
    with open(f"/proc/{pid}/mem", "rb") as f:
        f.seek(addr)
        code = f.read(size)
    open(f"{out}/code.bin", "wb").write(code)
    open(f"{out}/addr.txt", "w").write(hex(addr))


def report(out, func):
    base = int(open(f"{out}/addr.txt").read(), 16)
    size = len(open(f"{out}/code.bin", "rb").read())
    ips = collections.Counter(
        int(l, 16) for l in open(f"{out}/ips.txt") if l.strip()
    )
    total = sum(ips.values())
    inside = sum(c for a, c in ips.items() if base <= a < base + size)
    rows = []
    for l in open(f"{out}/disasm.txt"):
        m = re.match(r"\s*([0-9a-f]+):\s+(?:[0-9a-f]{2} )+\s*(.*)", l)
        if m:
            a = int(m.group(1), 16)
            rows.append((a - base, ips.get(a, 0), m.group(2).strip()))
    with open(f"{out}/annotated.txt", "w") as f:
        for off, c, text in rows:
            f.write(f"{c:6d} {100 * c / max(inside, 1):5.2f}% {off:5x}: {text}\n")
    print(f"{func}: {inside} of {total} samples ({100 * inside / max(total, 1):.1f}%), {size} bytes")
    loops = []
    for off, _, text in rows:
        m = re.match(r"j\w*\s+0x([0-9a-f]+)", text)
        if m:
            tgt = int(m.group(1), 16) - base
            if 0 <= tgt <= off:
                loops.append((tgt, off))
    print("hottest innermost loops (share of the function's samples, instructions):")
    shown = []
    for s, e in sorted(loops, key=lambda x: x[1] - x[0]):
        if any(s <= a and b <= e for a, b in shown):
            continue
        c = sum(n for o, n, _ in rows if s <= o <= e)
        if c >= 0.01 * inside:
            shown.append((s, e))
            n = sum(1 for o, _, _ in rows if s <= o <= e)
            print(f"  {s:5x}-{e:5x}  {100 * c / max(inside, 1):5.1f}%  {n} instructions")


if __name__ == "__main__":
    if sys.argv[1] == "dump":
        dump(*sys.argv[2:7])
    else:
        report(*sys.argv[2:4])
