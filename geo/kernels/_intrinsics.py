"""Low-level Numba intrinsics used by the hot kernels (Numba and its llvmlite backend only)."""

from __future__ import annotations

import math

from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic


@intrinsic
def prefetch(typingctx, arr, idx):
    """Hint the CPU to fetch ``arr[idx]``'s cache line (LLVM ``llvm.prefetch``, read, keep).

    No effect on results; an out-of-range index is harmless (prefetches never fault).
    """
    if not isinstance(arr, types.Array) or not isinstance(idx, types.Integer):
        return None
    sig = types.void(arr, idx)

    def codegen(context, builder, signature, args):
        aryty = signature.args[0]
        ary = context.make_array(aryty)(context, builder, args[0])
        ptr = cgutils.get_item_pointer(context, builder, aryty, ary, [args[1]], wraparound=False)
        i8p = ir.IntType(8).as_pointer()
        i32 = ir.IntType(32)
        fnty = ir.FunctionType(ir.VoidType(), [i8p, i32, i32, i32])
        fn = cgutils.get_or_insert_function(builder.module, fnty, "llvm.prefetch.p0")
        builder.call(
            fn,
            [
                builder.bitcast(ptr, i8p),
                ir.Constant(i32, 0),
                ir.Constant(i32, 3),
                ir.Constant(i32, 1),
            ],
        )
        return context.get_dummy_value()

    return sig, codegen


@intrinsic(prefer_literal=True)
def stack_f64(typingctx, size):
    """A 1-D float64 array of ``size`` (a compile-time constant) uninitialised doubles on the stack.

    For scratch in kernels compiled without Numba's runtime (no heap
    allocation, no reference counting): the array lives in the calling
    function's frame and must not be returned or kept.
    """
    if not isinstance(size, types.IntegerLiteral):
        return None
    n = size.literal_value
    arrty = types.Array(types.float64, 1, "C")
    sig = arrty(size)

    def codegen(context, builder, signature, args):
        data = cgutils.alloca_once(builder, context.get_value_type(types.float64), size=n)
        ary = context.make_array(arrty)(context, builder)
        itemsize = context.get_constant(types.intp, 8)
        context.populate_array(
            ary,
            data=data,
            shape=[context.get_constant(types.intp, n)],
            strides=[itemsize],
            itemsize=itemsize,
            meminfo=None,
        )
        return ary._getvalue()

    return sig, codegen


EDGES_PER_VECTOR = 8  # lanes of block_min_d2 = edges per block (zones.BLOCK_EDGES)


@intrinsic
def block_min_d2(typingctx, px, py, blk):
    """Min over the 8 edges of one edge block of the squared distance (m^2) from (px, py).

    ``blk`` is a C-contiguous float64 view of the block: 9 x-values, 9
    y-values, 8 inverse squared edge lengths.  Per edge the arithmetic is
    exactly ``zones._block_distance2``'s (IEEE, no fused multiply-add, the same
    min/max selects), done in 8-lane vectors with a tree reduction; since a min
    is exact, the result equals the scalar loop's bit for bit.  NaN distances
    are skipped, as in the scalar loop (which starts at +inf).
    """
    if not (
        isinstance(blk, types.Array)
        and blk.ndim == 1
        and blk.layout == "C"
        and blk.dtype == types.float64
    ):
        return None
    sig = types.float64(types.float64, types.float64, blk)

    def codegen(context, builder, signature, args):
        n = EDGES_PER_VECTOR
        f64 = ir.DoubleType()
        i32 = ir.IntType(32)
        i64 = ir.IntType(64)
        vt = ir.VectorType(f64, n)
        base = context.make_array(signature.args[2])(context, builder, args[2]).data

        def const(value):
            return ir.Constant(vt, [value] * n)

        def lanes(v, first, count):
            mask = ir.Constant(ir.VectorType(i32, count), list(range(first, first + count)))
            return builder.shuffle_vector(v, v, mask)

        def load(off):  # n consecutive doubles from blk[off]; unaligned is fine
            ptr = builder.gep(base, [ir.Constant(i64, off)])
            return builder.load(builder.bitcast(ptr, vt.as_pointer()), align=8)

        def splat(value):
            one = builder.insert_element(ir.Constant(vt, ir.Undefined), value, ir.Constant(i32, 0))
            return builder.shuffle_vector(one, one, ir.Constant(ir.VectorType(i32, n), [0] * n))

        def vmin(a, b):  # numba's min(a, b): b if b < a else a
            return builder.select(builder.fcmp_ordered("<", b, a), b, a)

        def vmax(a, b):  # numba's max(a, b): b if b > a else a
            return builder.select(builder.fcmp_ordered(">", b, a), b, a)

        ax = load(0)
        ex = builder.fsub(load(1), ax)
        ay = load(n + 1)
        ey = builder.fsub(load(n + 2), ay)
        inv = load(2 * n + 2)
        wx = builder.fsub(splat(args[0]), ax)
        wy = builder.fsub(splat(args[1]), ay)
        dot = builder.fadd(builder.fmul(wx, ex), builder.fmul(wy, ey))
        t = vmin(vmax(builder.fmul(dot, inv), const(0.0)), const(1.0))
        dx = builder.fsub(wx, builder.fmul(t, ex))
        dy = builder.fsub(wy, builder.fmul(t, ey))
        d2 = builder.fadd(builder.fmul(dx, dx), builder.fmul(dy, dy))
        m = vmin(const(math.inf), d2)  # NaN -> +inf: the scalar loop skips NaN too
        width = n
        while width > 1:
            width //= 2
            m = vmin(lanes(m, 0, width), lanes(m, width, width))
        return builder.extract_element(m, ir.Constant(i32, 0))

    return sig, codegen
