"""Where a compiled XLA CPU step spends its time, per op class and per model part.

``profile_jitted(fn, *args)`` runs ``fn`` under ``jax.profiler``, reads the XLA CPU thunk events
(one per fusion / custom call, loop bodies included) and joins each with its instruction in the
compiled HLO: the class comes from what the instruction computes (``matmul`` if it holds a dot
or convolution, else ``gather/scatter``, ``reduce``, ``copy/transpose``, ``elementwise``), the
part from the ``jax.named_scope`` in its op name (``attention``, ``mlp``, ``lm_head``, ...).
``profile_torch(fn)`` gives the same view of a PyTorch callable (aten op self times).

Times are sums of op self times over the profiled calls divided by the number of calls; the
threads of the XLA CPU pool run ops in parallel, so the sum can exceed the wall time.
"""

from __future__ import annotations

import collections
import glob
import re
import tempfile
import time

import jax

# Parts in priority order: the first scope name found in an op's name wins.
PARTS = ("attention", "cross_entropy", "lm_head", "embed", "rope", "norm", "mlp", "attn_proj", "optimizer")
_INSTR = re.compile(r"^\s*(?:ROOT )?%?([\w.\-]+) = (.*?) ([\w\-]+)\((.*)$")
_CALLS = re.compile(r"calls=%?([\w.\-]+)")
_OPNAME = re.compile(r'op_name="([^"]*)"')
_SKIP = ("ThunkExecutor", "ThreadpoolListener", "end: ", "PjitFunction", "$")


def _computations(hlo: str) -> dict[str, list[tuple[str, str, str]]]:
    """computation name -> [(instruction, opcode, rest of line)]."""
    comps: dict[str, list] = {}
    cur = None
    for line in hlo.splitlines():
        if line and not line[0].isspace() and "{" in line:
            head = line.split("(")[0].split()
            cur = head[-1].lstrip("%") if head else None
            comps[cur] = []
        elif cur is not None:
            m = _INSTR.match(line)
            if m:
                comps[cur].append((m.group(1), m.group(3), m.group(4)))
    return comps


def _opcodes(comps, name: str, seen=None) -> set[str]:
    seen = set() if seen is None else seen
    if name in seen or name not in comps:
        return set()
    seen.add(name)
    ops = set()
    for _, op, rest in comps[name]:
        ops.add(op)
        if op in ("fusion", "call"):
            for c in _CALLS.findall(rest):
                ops |= _opcodes(comps, c, seen)
    return ops


def classify_hlo(hlo: str) -> dict[str, tuple[str, str, str]]:
    """instruction name -> (op class, model part, op_name) for every instruction of the module."""
    comps = _computations(hlo)
    out = {}
    for instrs in comps.values():
        for name, op, rest in instrs:
            ops = {op} | (set().union(*(_opcodes(comps, c) for c in _CALLS.findall(rest))) if op in ("fusion", "call") else set())
            if ops & {"dot", "convolution"}:
                cls = "matmul"
            elif ops & {"gather", "scatter", "dynamic-slice", "dynamic-update-slice"}:
                cls = "gather/scatter/slice"
            elif ops & {"reduce", "reduce-window", "exponential", "log"}:
                cls = "reduce/exp"
            elif ops & {"copy", "transpose"} or op in ("copy", "transpose"):
                cls = "copy/transpose"
            elif op in ("while", "call", "conditional"):
                cls = "loop"
            else:
                cls = "elementwise"
            m = _OPNAME.search(rest)
            op_name = m.group(1) if m else ""
            scopes = set(re.split(r"[/()]", op_name))
            part = next((p for p in PARTS if p in scopes), "other")
            out[name] = (cls, part, op_name)
    return out


def profile_jitted(fn, *args, repeats: int = 2) -> dict:
    """Per-class / per-part / top-op seconds per call of the jitted ``fn(*args)`` (already warm or not)."""
    jax.block_until_ready(fn(*args))
    hlo = fn.lower(*args).compile().as_text()
    kinds = classify_hlo(hlo)
    with tempfile.TemporaryDirectory() as d:
        jax.profiler.start_trace(d)
        t0 = time.perf_counter()
        for _ in range(repeats):
            jax.block_until_ready(fn(*args))
        wall = (time.perf_counter() - t0) / repeats
        jax.profiler.stop_trace()
        pd = jax.profiler.ProfileData.from_file(sorted(glob.glob(f"{d}/**/*.xplane.pb", recursive=True))[-1])
        per_op: collections.Counter = collections.Counter()
        for plane in pd.planes:
            for line in plane.lines:
                if "XLA" not in line.name and "PjRt" not in line.name:
                    continue
                for e in line.events:
                    # A while/call event spans its body's ops, which have events of their own.
                    if e.name.startswith(_SKIP) or e.name not in kinds or kinds[e.name][0] == "loop":
                        continue
                    per_op[e.name] += e.duration_ns / 1e9 / repeats
    return summarise(per_op, kinds, wall)


def summarise(per_op: dict, kinds: dict, wall: float) -> dict:
    by_class: collections.Counter = collections.Counter()
    by_part: collections.Counter = collections.Counter()
    by_both: collections.Counter = collections.Counter()
    for name, s in per_op.items():
        cls, part, _ = kinds.get(name, ("other", "other", ""))
        by_class[cls] += s
        by_part[part] += s
        by_both[f"{part}:{cls}"] += s
    total = sum(per_op.values())
    top = [{"op": n, "s": s, "class": kinds.get(n, ("?",))[0], "part": kinds.get(n, ("", "?"))[1], "op_name": kinds.get(n, ("", "", ""))[2][-80:]}
           for n, s in per_op.most_common(25)]  # fmt: skip
    rnd = lambda c: {k: round(v, 4) for k, v in c.most_common()}  # noqa: E731
    return {"wall_s": wall, "op_time_s": total, "by_class": rnd(by_class), "by_part": rnd(by_part), "by_part_class": rnd(by_both), "top_ops": top}


def profile_torch(fn, repeats: int = 2) -> dict:
    """aten self-CPU seconds per call of ``fn()`` (after one warm-up call)."""
    import torch

    fn()
    t0 = time.perf_counter()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(repeats):
            fn()
    wall = (time.perf_counter() - t0) / repeats
    ops = collections.Counter({e.key: e.self_cpu_time_total / 1e6 / repeats for e in prof.key_averages()})
    return {"wall_s": wall, "op_time_s": sum(ops.values()), "top_ops": [{"op": k, "s": round(v, 4)} for k, v in ops.most_common(15)]}
