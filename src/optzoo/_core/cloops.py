"""The CPU fast path: a rule's per-tensor step, traced once and written as plain C loops.

On this kind of CPU, torch.compile's kernels for an optimizer step run 10-35% slower than a
hand-written loop of the same rule (``benchmarks/kernel_floor.py``): inductor sums norms in
memory-held accumulators, reloads every hyperparameter on each vector of elements and fuses
the loops of several tensors into one. This module generates the hand-written form instead,
from the rule itself (still written once, as per-tensor torch code in ``rules``):

1. ``trace``: the rule's both phases (``optimizer.run_rule``) for one tensor become an aten
   graph (``make_fx`` on fake tensors, functionalized: in-place writes are ``copy_`` nodes at
   the end). Its values are *full-size* (computed from the parameter, gradient or a state
   buffer, elementwise) or *scalars* (0-d: hyperparameters, the step counter, and sums over a
   full-size value: the norms of a trust ratio).
2. ``generate``: one C function per graph. Scalars are computed once per tensor, in local
   variables (registers). Each *pass* is one ``for`` over the elements, vectorised by the C
   compiler: a pass computes the full-size values that the next scalars need and sums them
   (in blocks: a float register sum per block, added up in double); the last pass stores
   the parameter and state. Every pass recomputes what it needs from the old values (no
   full-size temporary), and a tensor's passes run one after another while it is in cache.
3. ``compile_source``: built with the system C compiler (``-O3 -march=native``, multiply-adds
   contracted, as the compiled path already does), cached on disk by the source's hash, and
   loaded with ``ctypes``: about a second, against 25-130 s for inductor.

A rule whose graph holds an operation that ``generate`` does not know (a matrix product, a
reduction over one dimension) gets ``None`` from ``plan_for`` and stays on torch.compile.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import math
import os
import platform
import shutil
import subprocess
import tempfile
import threading
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

aten = torch.ops.aten

_CTYPES = {
    torch.float32: "float",
    torch.float64: "double",
    torch.int32: "int32_t",
    torch.int64: "int64_t",
    torch.bool: "int",
}
_FLOAT_SUFFIX = {torch.float32: "f", torch.float64: ""}
# Elements summed in one block's float register accumulator before the block's sum is added
# to the tensor's double total (float32 error of a sum grows with its length).
BLOCK = 4096
FLAGS = (
    "-O3",
    "-march=native",
    "-ffp-contract=fast",
    "-fno-math-errno",
    "-fno-trapping-math",
    "-fopenmp",
    "-std=c11",
    "-shared",
    "-fPIC",
)
_generating = threading.local()


def generating() -> bool:
    """Whether the current trace is for ``generate`` (rules then pick their inline forms of
    functions that C has no vectorised version of, such as ``rules.sigmoid``)."""
    return getattr(_generating, "on", False)


class Unsupported(Exception):  # noqa: N818 (not an error: a reason to fall back)
    """The rule's graph has something ``generate`` cannot write as C loops."""


# --------------------------------------------------------------------------------------------
# Tracing
# --------------------------------------------------------------------------------------------


def _flat_hp(hp: dict[str, Any]) -> tuple[list[tuple[str, int | None]], list[float], tuple]:
    """A group's hyperparameters: the paths and values of its numbers (passed to the kernel
    as doubles, so changing one needs no new trace) and the rest (booleans, strings, None:
    they steer the trace, so they are part of its key)."""
    paths, values, fixed = [], [], []
    for key, value in hp.items():
        items = value if isinstance(value, tuple | list) else (value,)
        for k, v in enumerate(items):
            if isinstance(v, int | float) and not isinstance(v, bool):
                paths.append((key, k if isinstance(value, tuple | list) else None))
                values.append(float(v))
            else:
                fixed.append((key, k, v if isinstance(v, bool | str | None) else repr(v)))
    return paths, values, tuple(fixed)


def trace(rule: Any, param: Tensor, state: dict[str, Tensor], hp: dict[str, Any]) -> torch.fx.Graph:
    """The aten graph of ``run_rule`` for one tensor shaped like ``param``: placeholders are
    the parameter, the gradient, ``state``'s tensors (in its order) and the hyperparameters'
    numbers (0-d float64, in ``_flat_hp`` order)."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from torch.func import functionalize
    from torch.fx.experimental.proxy_tensor import make_fx

    from optzoo._core.optimizer import run_rule

    keys = tuple(state)
    paths, _, _ = _flat_hp(hp)

    def one_tensor(p, g, state_values, hp_values):
        rebuilt = dict(hp)
        for (key, k), v in zip(paths, hp_values, strict=True):
            if k is None:
                rebuilt[key] = v
            else:
                items = list(rebuilt[key])
                items[k] = v
                rebuilt[key] = tuple(items)
        run_rule(rule, [p], [g], [dict(zip(keys, state_values, strict=True))], {}, rebuilt)

    with FakeTensorMode():
        p, g = (torch.empty(param.shape, dtype=param.dtype) for _ in range(2))
        values = [torch.empty(v.shape, dtype=v.dtype) for v in state.values()]
        numbers = [torch.empty((), dtype=torch.float64) for _ in paths]
    _generating.on = True
    try:
        graph = make_fx(
            functionalize(one_tensor, remove="mutations_and_views"), tracing_mode="fake"
        )(p, g, values, numbers)
    finally:
        _generating.on = False
    return graph.graph


# --------------------------------------------------------------------------------------------
# C generation
# --------------------------------------------------------------------------------------------


def _literal(value: Any, dtype: torch.dtype) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if dtype.is_floating_point:
        value = float(value)
        if value != value or value in (math.inf, -math.inf):
            text = "NAN" if value != value else ("INFINITY" if value > 0 else "-INFINITY")
            return f"(({_CTYPES[dtype]}){text})"
        return f"(({_CTYPES[dtype]}){value.hex()})"
    return f"(({_CTYPES[dtype]}){int(value)})"


def _sign(x: str, t: str) -> str:
    return f"(({t})({x} > 0) - ({t})({x} < 0))"


_UNARY: dict[Any, Callable[[str, str, str], str]] = {
    aten.neg.default: lambda x, t, f: f"(-{x})",
    aten.abs.default: lambda x, t, f: f"fabs{f}({x})",
    aten.sqrt.default: lambda x, t, f: f"sqrt{f}({x})",
    aten.rsqrt.default: lambda x, t, f: f"(({t})1 / sqrt{f}({x}))",
    aten.reciprocal.default: lambda x, t, f: f"(({t})1 / {x})",
    aten.exp.default: lambda x, t, f: f"exp{f}({x})",
    aten.log.default: lambda x, t, f: f"log{f}({x})",
    aten.sigmoid.default: lambda x, t, f: f"(({t})1 / (({t})1 + exp{f}(-{x})))",
    aten.sign.default: lambda x, t, f: _sign(x, t),
    aten.round.default: lambda x, t, f: f"nearbyint{f}({x})",
    aten.logical_not.default: lambda x, t, f: f"(!{x})",
}
_BINARY: dict[Any, str] = {
    aten.add.Tensor: "({0} + {1})",
    aten.sub.Tensor: "({0} - {1})",
    aten.mul.Tensor: "({0} * {1})",
    aten.div.Tensor: "({0} / {1})",
    aten.gt.Tensor: "({0} > {1})",
    aten.gt.Scalar: "({0} > {1})",
    aten.lt.Tensor: "({0} < {1})",
    aten.lt.Scalar: "({0} < {1})",
    aten.ge.Tensor: "({0} >= {1})",
    aten.ge.Scalar: "({0} >= {1})",
    aten.le.Tensor: "({0} <= {1})",
    aten.le.Scalar: "({0} <= {1})",
    aten.eq.Tensor: "({0} == {1})",
    aten.eq.Scalar: "({0} == {1})",
    aten.ne.Tensor: "({0} != {1})",
    aten.ne.Scalar: "({0} != {1})",
    aten.bitwise_and.Tensor: "({0} & {1})",
    aten.bitwise_or.Tensor: "({0} | {1})",
    aten.bitwise_xor.Tensor: "({0} ^ {1})",
    aten.logical_and.default: "({0} && {1})",
    aten.logical_or.default: "({0} || {1})",
    aten.bitwise_left_shift.Tensor_Scalar: "({0} << {1})",
    aten.__lshift__.Scalar: "({0} << {1})",
    aten.maximum.default: "({0} != {0} || {0} > {1} ? {0} : {1})",
    aten.minimum.default: "({0} != {0} || {0} < {1} ? {0} : {1})",
}
# Ops that pass a scalar through unchanged (their shapes differ only by ones).
_SCALAR_VIEWS = {
    aten.stack.default,
    aten.select_copy.int,
    aten.select.int,
    aten.expand_copy.default,
    aten.expand.default,
    aten.view_copy.default,
    aten.view.default,
    aten.unsqueeze_copy.default,
    aten.unsqueeze.default,
    aten.squeeze_copy.dim,
    aten.squeeze.dim,
    aten.amax.default,
    aten.clone.default,
    aten.alias_copy.default,
    aten.sum.default,
}


class _Graph:
    """The graph's values sorted into full-size ones (with the first pass that can compute
    each) and scalars (with the number of passes that must end before each is known)."""

    def __init__(self, graph: torch.fx.Graph, n_tensors: int) -> None:
        self.nodes = [n for n in graph.nodes if n.op == "call_function"]
        self.inputs = [n for n in graph.nodes if n.op == "placeholder"]
        self.full: dict[torch.fx.Node, int] = {}
        self.scalar: dict[torch.fx.Node, int] = {}
        self.stores: list[tuple[torch.fx.Node, Any]] = []  # (input, value written into it)
        shape = tuple(self.inputs[0].meta["val"].shape)
        for k, n in enumerate(self.inputs):
            val = n.meta["val"]
            if k < n_tensors and tuple(val.shape) == shape:
                self.full[n] = 0
            elif val.numel() == 1:
                self.scalar[n] = 0
            else:
                raise Unsupported(f"an input of shape {tuple(val.shape)}")
        for n in self.nodes:
            if n.target is aten.copy_.default:
                if n.args[0] not in self.inputs:
                    raise Unsupported("a write into an intermediate value")
                self.stores.append((n.args[0], n.args[1]))
                continue
            ins = n.all_input_nodes
            after = max((self.scalar[a] for a in ins if a in self.scalar), default=0)
            full_in = [self.full[a] for a in ins if a in self.full]
            out_shape = tuple(n.meta["val"].shape)
            if n.target is aten.sum.default and len(n.args) == 1 and not n.kwargs:
                self.scalar[n] = max(full_in) + 1 if full_in else after
            elif full_in:
                if out_shape != shape:
                    raise Unsupported(f"{n.target} gives shape {out_shape}")
                self.full[n] = max(after, *full_in)
            elif n.meta["val"].numel() == 1:
                self.scalar[n] = after
            else:
                raise Unsupported(f"{n.target} gives shape {out_shape}")
        self.sums = [
            n for n in self.nodes if n.target is aten.sum.default and n.args[0] in self.full
        ]
        # the last pass is the first that can compute every stored value (the parameter's
        # needs the trust ratio: LAMB's and LARS's second pass); it may also sum
        self.passes = 1 + max(
            [
                0,
                *(self.full.get(v, 0) for _, v in self.stores),
                *(self.full[s.args[0]] for s in self.sums),
            ]
        )

    def stored_in(self, level: int, early: dict[Any, Any]) -> list[tuple[Any, Any]]:
        """The (buffer, value) stores of full-size buffers that pass ``level`` makes."""
        return [
            (d, v)
            for d, v in self.stores
            if d in self.full and (self.full[v] if v in early else self.passes - 1) == level
        ]

    def needed(self, level: int, early: dict[Any, Any]) -> set[Any]:
        """The full-size values pass ``level`` computes: those its sums and its stores need,
        down to the inputs and to the values earlier passes stored (``early``)."""
        roots = [s.args[0] for s in self.sums if self.scalar[s] == level + 1]
        roots += [v for _, v in self.stored_in(level, early)]
        loaded = {v for v in early if self.full[v] < level}
        needed: set[Any] = set()
        while roots:
            n = roots.pop()
            if n in self.full and n not in needed and n not in self.inputs and n not in loaded:
                needed.add(n)
                roots += n.all_input_nodes
        return needed

    def early_stores(self) -> dict[Any, Any]:
        """Stores moved from the last pass to the first that computes their value (value ->
        buffer), where no later pass needs the buffer's old value: later passes then load the
        new value rather than recompute it from old ones. LAMB's second pass so reads the
        parameter and the new moments (3 tensors, not 4) and writes 1 (not 3): measured in one
        process, 1.50-1.54 -> 1.34-1.37 x fused AdamW. (On the CPU a step runs only once its
        gradients are known to be finite, so no write needs undoing.)"""
        last = self.passes - 1
        early = {
            v: d
            for d, v in self.stores
            if d in self.full
            and v in self.full
            and v not in self.inputs
            and self.full[v] < last
            and _dtype(v) == _dtype(d)
        }
        while True:
            clashes = {
                v
                for level in range(1, self.passes)
                for n in self.needed(level, early)
                for v, d in early.items()
                if self.full[v] < level and d in n.all_input_nodes
            }
            if not clashes:
                return early
            for v in clashes:
                del early[v]


def _dtype(node: Any) -> torch.dtype:
    return node.meta["val"].dtype


def _value(arg: Any) -> Any:
    return arg.meta["val"] if isinstance(arg, torch.fx.Node) else arg


def _expression(node: torch.fx.Node, name: Callable[[Any, torch.dtype], str]) -> str:
    """C expression of ``node``, its operands named by ``name(operand, dtype to read it as)``."""
    target, dtype, args = node.target, _dtype(node), node.args
    t = _CTYPES.get(dtype)
    if t is None:
        raise Unsupported(f"a value of dtype {dtype}")
    f = _FLOAT_SUFFIX.get(dtype, "")
    if target in _SCALAR_VIEWS:
        if target is aten.stack.default and len(args[0]) != 1:
            raise Unsupported("a stack of several values")
        return name(args[0][0] if target is aten.stack.default else args[0], dtype)
    if target is aten._to_copy.default:
        return name(args[0], dtype)
    if target is aten.copy.default:
        return name(args[1], dtype)
    if target in (aten.ones_like.default, aten.zeros_like.default, aten.full_like.default):
        fill = {aten.ones_like.default: 1, aten.zeros_like.default: 0}.get(target)
        return _literal(args[1] if fill is None else fill, dtype)
    if target in (aten.view.dtype, aten.view_copy.dtype):
        source = _dtype(args[0])
        if source.itemsize != dtype.itemsize or torch.bool in (source, dtype):
            raise Unsupported(f"a bit cast from {source} to {dtype}")
        pair = f"{_CTYPES[source]}_{t}".replace("_t", "")
        return f"bits_{pair}({name(args[0], source)})"
    if target in _UNARY:
        return _UNARY[target](name(args[0], dtype), t, f)
    if target in (aten.clamp.default, aten.clamp_min.default, aten.clamp_max.default):
        bounds = list(args[1:]) + [None] * 2
        low, high = (
            bounds[:2]
            if target is aten.clamp.default
            else ((bounds[0], None) if target is aten.clamp_min.default else (None, bounds[0]))
        )
        x = name(args[0], dtype)
        if low is not None:
            x = f"({x} < {name(low, dtype)} ? {name(low, dtype)} : {x})"
        if high is not None:
            x = f"({x} > {name(high, dtype)} ? {name(high, dtype)} : {x})"
        return x
    if target is aten.where.self:
        return f"({name(args[0], torch.bool)} ? {name(args[1], dtype)} : {name(args[2], dtype)})"
    if target is aten.rsub.Scalar:
        alpha = node.kwargs.get("alpha", 1)
        return f"({name(args[1], dtype)} - {_literal(alpha, dtype)} * {name(args[0], dtype)})"
    if target in (aten.pow.Tensor_Scalar, aten.pow.Tensor_Tensor, aten.pow.Scalar):
        if target is aten.pow.Tensor_Scalar and args[1] == 2:
            return "({0} * {0})".format(name(args[0], dtype))
        return f"pow{f}({name(args[0], dtype)}, {name(args[1], dtype)})"
    if target in (aten.addcmul.default, aten.addcdiv.default):
        value = _literal(node.kwargs.get("value", 1), dtype)
        op = "*" if target is aten.addcmul.default else "/"
        a, b, c = (name(x, dtype) for x in args[:3])
        return f"({a} + {value} * ({b} {op} {c}))"
    if target in (aten.lerp.Scalar, aten.lerp.Tensor):
        a, b, w = (name(x, dtype) for x in args[:3])
        return f"({a} + {w} * ({b} - {a}))"
    if target in _BINARY:
        alpha = node.kwargs.get("alpha", 1)
        if alpha != 1:
            op = "+" if target is aten.add.Tensor else "-"
            return (
                f"({name(args[0], dtype)} {op} {_literal(alpha, dtype)} * {name(args[1], dtype)})"
            )
        operand = dtype
        if dtype is torch.bool and target not in (
            aten.logical_and.default,
            aten.logical_or.default,
        ):
            operand = torch.result_type(*(_value(a) for a in args[:2]))  # a comparison
        return _BINARY[target].format(*(name(a, operand) for a in args[:2]))
    raise Unsupported(f"the operation {target}")


_PRELUDE = r"""#include <math.h>
#include <stdint.h>
#include <string.h>

static inline float bits_int32_float(int32_t x) { float y; memcpy(&y, &x, 4); return y; }
static inline int32_t bits_float_int32(float x) { int32_t y; memcpy(&y, &x, 4); return y; }
static inline double bits_int64_double(int64_t x) { double y; memcpy(&y, &x, 8); return y; }
static inline int64_t bits_double_int64(double x) { int64_t y; memcpy(&y, &x, 8); return y; }
"""


def generate(graph: torch.fx.Graph, n_tensors: int, entry: str = "optzoo_rule") -> str:
    """C source of ``graph`` (from ``trace``, with ``n_tensors`` tensor inputs before the
    hyperparameters): ``entry(count, numel, tensors, hp, threads)`` runs the rule on ``count``
    tensors; ``tensors`` holds, per tensor, the data pointers of its ``n_tensors`` inputs."""
    g = _Graph(graph, n_tensors)
    names: dict[Any, str] = {}
    body: list[str] = []
    for k, node in enumerate(g.inputs):
        t = _CTYPES.get(_dtype(node))
        if t is None or _dtype(node) is torch.bool:
            raise Unsupported(f"an input of dtype {_dtype(node)}")
        if k >= n_tensors:
            names[node] = f"h{k - n_tensors}"
            body.append(f"    const {t} {names[node]} = H[{k - n_tensors}];")
        elif node in g.full:
            names[node] = f"t{k}[i]"
            body.append(f"    {t} *restrict t{k} = ({t} *)T[{k}];")
        else:
            names[node] = f"s{k}"
            body.append(f"    const {t} s{k} = *(const {t} *)T[{k}];")

    def name(arg: Any, dtype: torch.dtype) -> str:
        if not isinstance(arg, torch.fx.Node):
            return _literal(arg, dtype)
        if _dtype(arg) == dtype:
            return names[arg]
        return f"(({_CTYPES[dtype]}){names[arg]})"

    def scalars(level: int) -> None:
        for n in g.nodes:
            if g.scalar.get(n) == level and n not in names and n not in g.sums:
                names[n] = f"s_{n.name}"
                body.append(f"    const {_CTYPES[_dtype(n)]} {names[n]} = {_expression(n, name)};")

    early = g.early_stores()

    def loop(level: int) -> None:
        reductions = [s for s in g.sums if g.scalar[s] == level + 1]
        needed = g.needed(level, early)
        for value, buffer in early.items():
            if g.full[value] < level:  # stored by an earlier pass: loaded, not recomputed
                names[value] = names[buffer]
        lines = []
        for n in g.nodes:
            if n in needed:
                names[n] = f"v_{n.name}"
                lines.append(f"const {_CTYPES[_dtype(n)]} {names[n]} = {_expression(n, name)};")
        for s in reductions:
            lines.append(f"part_{s.name} += {name(s.args[0], _accumulator(s))};")
        lines += [f"{names[d]} = {name(v, _dtype(d))};" for d, v in g.stored_in(level, early)]
        for n in needed:  # full-size values live only inside their loop
            del names[n]
        if not reductions:
            body.extend(["    #pragma omp simd", "    for (int64_t i = 0; i < n; i++) {"])
            body.extend(f"        {line}" for line in lines)
            body.append("    }")
            return
        body.extend(f"    double acc_{s.name} = 0;" for s in reductions)
        body.append(f"    for (int64_t b = 0; b < n; b += {BLOCK}) {{")
        body.append(f"        const int64_t e = n - b < {BLOCK} ? n : b + {BLOCK};")
        body.extend(f"        {_CTYPES[_accumulator(s)]} part_{s.name} = 0;" for s in reductions)
        clauses = " ".join(f"reduction(+:part_{s.name})" for s in reductions)
        body.extend(
            [f"        #pragma omp simd {clauses}", "        for (int64_t i = b; i < e; i++) {"]
        )
        body.extend(f"            {line}" for line in lines)
        body.append("        }")
        body.extend(f"        acc_{s.name} += part_{s.name};" for s in reductions)
        body.append("    }")
        for s in reductions:
            names[s] = f"s_{s.name}"
            body.append(f"    const {_CTYPES[_dtype(s)]} {names[s]} = acc_{s.name};")

    for level in range(g.passes):
        scalars(level)
        loop(level)
    scalars(g.passes)
    for d, v in g.stores:
        if d not in g.full:
            body.append(
                f"    *({_CTYPES[_dtype(d)]} *)T[{g.inputs.index(d)}] = {name(v, _dtype(d))};"
            )
    return "\n".join(
        [
            _PRELUDE,
            "static void one(const int64_t n, void *const *T, const double *H) {",
            *body,
            "}",
            "",
            f"void {entry}(int64_t count, const int64_t *numel, void *const *T, const double *H,"
            " int threads) {",
            "    #pragma omp parallel for schedule(dynamic, 1) num_threads(threads) "
            "if(threads > 1)",
            f"    for (int64_t k = 0; k < count; k++) one(numel[k], T + k * {n_tensors}, H);",
            "}",
            "",
        ]
    )


def _accumulator(reduction: torch.fx.Node) -> torch.dtype:
    return torch.float64 if _dtype(reduction) is torch.float64 else torch.float32


# --------------------------------------------------------------------------------------------
# Compiling and running
# --------------------------------------------------------------------------------------------


@functools.cache
def compiler() -> str | None:
    """The C compiler: ``$CC``, else ``cc``, ``gcc`` or ``clang`` on the path."""
    for candidate in (os.environ.get("CC"), "cc", "gcc", "clang"):
        found = candidate and shutil.which(candidate)
        if found:
            return found
    return None


@functools.cache
def _machine() -> str:
    """What ``-march=native`` depends on: a cached library is reused only on the same CPU."""
    try:
        with open("/proc/cpuinfo") as f:
            lines = [x for x in f if x.startswith(("model name", "flags", "Features"))]
        return "".join(sorted(set(lines)))
    except OSError:
        return platform.machine() + platform.processor()


def _cache_dir() -> str:
    path = os.environ.get("OPTZOO_CACHE_DIR") or os.path.join(
        os.path.expanduser("~"), ".cache", "optzoo"
    )
    path = os.path.join(path, "cloops")
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        path = os.path.join(tempfile.gettempdir(), f"optzoo-cloops-{os.getuid()}")
        os.makedirs(path, exist_ok=True)
    return path


_KERNELS: dict[tuple[str, str], Callable[..., Any]] = {}
_LOCK = threading.Lock()


def compile_source(
    source: str,
    entry: str = "optzoo_rule",
    argtypes: tuple[Any, ...] = (
        ctypes.c_int64,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_void_p,
        ctypes.c_int,
    ),
    restype: Any = None,
) -> Callable[..., Any]:
    """``entry`` of ``source``, built as a shared library (cached on disk by the hash of the
    source, the flags, the compiler and the CPU) and loaded. Without OpenMP (a compiler that
    lacks ``-fopenmp``) it is built again without: the loops stay vectorised by ``-O3``, and
    the tensors of a call run on one thread."""
    cc = compiler()
    if cc is None:
        raise Unsupported("no C compiler on the path")
    key = hashlib.sha256("\0".join([source, *FLAGS, cc, _machine()]).encode()).hexdigest()[:32]
    with _LOCK:
        if (key, entry) in _KERNELS:
            return _KERNELS[key, entry]
        directory = _cache_dir()
        library = os.path.join(directory, f"{key}.so")
        if not os.path.exists(library):
            code = os.path.join(directory, f"{key}.c")
            with open(code, "w") as f:
                f.write(source)
            partial = f"{library}.{os.getpid()}.tmp"
            errors = ""
            for flags in (FLAGS, tuple(x for x in FLAGS if x != "-fopenmp")):
                done = subprocess.run(
                    [cc, *flags, "-o", partial, code, "-lm"], capture_output=True, text=True
                )
                if done.returncode == 0:
                    break
                errors = done.stderr[-2000:]
            else:
                raise Unsupported(f"{cc} could not build the loops: {errors}")
            os.replace(partial, library)  # atomic: a concurrent build writes the same bytes
        function = getattr(ctypes.CDLL(library), entry)
        function.argtypes = list(argtypes)
        function.restype = restype
        _KERNELS[key, entry] = function
        return function


_ALL_FINITE = r"""#include <stdint.h>

/* x * 0 is 0 for a finite x, NaN for an infinite or NaN one. A tensor is read as four
   quarters side by side: one stream of reads is latency-bound on a CPU core (measured on
   step_time's gradients: 0.32 x a fused AdamW step one stream at a time, 0.20 in four). */
#define BAD(T, ZERO)                                                                  \
    static int bad_##T(const T *restrict x, const int64_t n) {                        \
        const int64_t q = n / 4;                                                      \
        int bad = 0;                                                                  \
        _Pragma("omp simd reduction(|:bad)")                                          \
        for (int64_t i = 0; i < q; i++) {                                             \
            const T z = x[i] * ZERO + x[i + q] * ZERO + x[i + 2 * q] * ZERO           \
                        + x[i + 3 * q] * ZERO;                                        \
            bad |= z != z;                                                            \
        }                                                                             \
        for (int64_t i = 4 * q; i < n; i++) {                                         \
            const T z = x[i] * ZERO;                                                  \
            bad |= z != z;                                                            \
        }                                                                             \
        return bad;                                                                   \
    }
BAD(float, 0.0f)
BAD(double, 0.0)

int optzoo_all_finite(int64_t count, const int64_t *numel, const int *is_double,
                      void *const *T, int threads) {
    int bad = 0;
    #pragma omp parallel for reduction(|:bad) schedule(dynamic, 1) num_threads(threads) \
        if(threads > 1)
    for (int64_t k = 0; k < count; k++)
        bad |= is_double[k] ? bad_double(T[k], numel[k]) : bad_float(T[k], numel[k]);
    return !bad;
}
"""


def all_finite(tensors: list[Tensor]) -> bool | None:
    """Whether every element of ``tensors`` is finite, in one vectorised read; None where
    this cannot tell (a tensor off the CPU, not float32 or float64 or not contiguous, or no
    C compiler)."""
    if any(
        t.device.type != "cpu" or t.dtype not in _FLOAT_SUFFIX or not t.is_contiguous()
        for t in tensors
    ):
        return None
    try:
        check = compile_source(
            _ALL_FINITE,
            "optzoo_all_finite",
            (ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int),
            ctypes.c_int,
        )
    except Unsupported:
        return None
    count = len(tensors)
    numel = (ctypes.c_int64 * count)(*(t.numel() for t in tensors))
    doubles = (ctypes.c_int * count)(*(t.dtype is torch.float64 for t in tensors))
    pointers = (ctypes.c_void_p * count)(*(t.data_ptr() for t in tensors))
    return bool(check(count, numel, doubles, pointers, torch.get_num_threads()))


class CPlan:
    """One param group's step as generated C loops: its tensors in runs that share a kernel
    (same graph once traced: same dtype and state layout), one call per run.

    ``fixed``: the group's non-number hyperparameters the traces were made with (a new
    value needs a new plan)."""

    def __init__(
        self,
        runs: list[tuple[Callable[..., None], list[int]]],
        keys: tuple[str, ...],
        paths: list[Any],
        fixed: tuple[Any, ...],
        params: list[Tensor],
        states: list[dict[str, Tensor]],
    ) -> None:
        self.runs = [
            (kernel, ids, (ctypes.c_int64 * len(ids))(*(params[i].numel() for i in ids)))
            for kernel, ids in runs
        ]
        # what the loops were built for: each parameter's dtype and size, each state tensor
        # (a replaced one may differ in dtype or layout: ``__call__`` then refuses)
        self.built_for = [
            (p.dtype, p.numel(), tuple(s.values())) for p, s in zip(params, states, strict=True)
        ]
        self.keys = keys
        self.paths = paths
        self.fixed = fixed
        self._hp: tuple[dict[str, Any], Any] | None = None

    def matches(self, hp: dict[str, Any]) -> bool:
        return _flat_hp(hp)[2] == self.fixed

    def __call__(
        self,
        params: list[Tensor],
        grads: list[Tensor],
        states: list[dict[str, Tensor]],
        hp: dict[str, Any],
    ) -> bool:
        """One step; False, with nothing written, where a parameter or state tensor is no
        longer what the loops were built for (a new plan is then needed)."""
        for p, s, (dtype, numel, tensors) in zip(params, states, self.built_for, strict=True):
            if p.dtype != dtype or p.numel() != numel or not p.is_contiguous():
                return False
            if len(s) != len(tensors) or any(
                a is not b for a, b in zip(s.values(), tensors, strict=True)
            ):
                return False
        if self._hp is None or self._hp[0] != hp:
            values = _flat_hp(hp)[1]
            self._hp = (dict(hp), (ctypes.c_double * max(1, len(values)))(*values))
        threads = torch.get_num_threads()
        keys = self.keys
        for kernel, ids, numel in self.runs:
            pointers = []
            held = []
            for i in ids:
                g = grads[i]
                if not g.is_contiguous() or g.dtype != params[i].dtype:
                    g = g.to(params[i].dtype).contiguous()
                    held.append(g)
                state = states[i]
                pointers += [
                    params[i].data_ptr(),
                    g.data_ptr(),
                    *(state[k].data_ptr() for k in keys),
                ]
            kernel(
                len(ids),
                ctypes.addressof(numel),
                (ctypes.c_void_p * len(pointers))(*pointers),
                self._hp[1],
                threads,
            )
        return True


# why the last rule that ``plan_for`` could not write as C loops stays on torch.compile
last_fallback: str | None = None
# rule -> (tensor layout, hyperparameters' fixed values) -> C source: traced once a process
_SOURCES: weakref.WeakKeyDictionary[Any, dict[Any, str]] = weakref.WeakKeyDictionary()


def plan_for(
    rule: Any, params: list[Tensor], states: list[dict[str, Tensor]], hp: dict[str, Any]
) -> CPlan | None:
    """The C loops of ``rule`` for one param group's tensors, or None when the rule or its
    tensors are not for them (not per tensor, a group-wide buffer or check, a tensor off the
    CPU, not float32 or float64, not contiguous, or an operation ``generate`` lacks)."""
    if not getattr(rule, "per_tensor", False) or getattr(rule, "group_buffers", ()):
        return None
    if getattr(rule, "gradient_check", None) is not None or compiler() is None:
        return None
    keys = tuple(states[0])
    for p, s in zip(params, states, strict=True):
        tensors = [p, *s.values()]
        if tuple(s) != keys or any(
            t.device.type != "cpu" or not t.is_contiguous() or t.dtype not in _FLOAT_SUFFIX
            for t in tensors
        ):
            return None
    paths, _, fixed = _flat_hp(hp)
    runs: dict[str, list[int]] = {}
    traced = _SOURCES.setdefault(rule, {})
    try:
        for i, (p, s) in enumerate(zip(params, states, strict=True)):
            layout = (tuple(p.shape), p.dtype, keys, fixed)
            layout += tuple((v.dtype, tuple(v.shape)) for v in s.values())
            if layout not in traced:
                traced[layout] = generate(trace(rule, p, s, hp), 2 + len(keys))
            runs.setdefault(traced[layout], []).append(i)
        kernels = [(compile_source(source), ids) for source, ids in runs.items()]
    except Exception as error:  # Unsupported, or a rule the tracer cannot follow
        global last_fallback
        last_fallback = f"{getattr(rule, '__name__', rule)}: {type(error).__name__}: {error}"
        return None
    return CPlan(kernels, keys, paths, fixed, params, states)
