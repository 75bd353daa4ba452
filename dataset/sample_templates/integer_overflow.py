"""Code templates for 整数溢出 (integer overflow).

A multiplication, addition or sum that can wrap before it is checked or used.

Every template takes (ctx, bad) and returns (code, reason); ``bad`` selects the
defective variant. ``TEMPLATES`` lists them with their language, in the order
the generator uses them round-robin.
"""
from __future__ import annotations

from .common import Ctx, T, c_includes, camel


def io_c_alloc(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = f"{d.p}_{c.pick('alloc_frames', 'alloc_batch', 'new_blocks', 'reserve')}"
    count = c.var("count", "nframes", "nblocks")
    size = c.var("size", "frame_size", "block_size")
    total = c.var("total", "bytes", "need")
    buf = c.var("buf", "mem", "area")
    i = c.var("i", "k", "j")
    form = c.pick("div", "limits")
    mc, ms = f"{d.p.upper()}_MAX_COUNT", f"{d.p.upper()}_MAX_SIZE"
    defines = []
    if form == "div":
        check = [] if bad else c.guard(f"{count} > UINT32_MAX / {size}", ["return NULL;"])
    else:
        cmax = c.pick(1024, 4096, 8192)
        smax = c.pick(4096, 65536)
        defines = [f"#define {mc} {cmax}", f"#define {ms} {smax}", ""]
        check = (c.guard(f"{count} > {mc}", ["return NULL;"]) if bad
                 else c.guard(f"{count} > {mc} || {size} > {ms}", ["return NULL;"]))
    code = T(r"""
$defines
$doc
uint8_t *$fn(uint32_t $count, uint32_t $size)
{
    uint32_t $total;
    uint8_t *$buf;

$trace
    if ($count == 0 || $size == 0) {
        return NULL;
    }
$check
    $total = $count * $size;
    $buf = malloc($total);
$acheck
    for (uint32_t $i = 0; $i < $count; $i++) {
        memset($buf + (size_t)$i * $size, 0, $size);
    }
$pad
    return $buf;
}
""", defines=defines, doc=c.doc(f"Allocates zeroed storage for a batch of {d.noun} frames."),
          fn=fn, count=count, size=size, total=total, buf=buf, i=i, trace=c.trace(fn),
          check=check, acheck=c.guard(c.isnull(buf), ["return NULL;"]), pad=c.pad(fn))
    if bad and form == "div":
        reason = (f"函数 {fn} 直接计算 {total} = {count} * {size}，两个 uint32_t 相乘的结果可能超过 UINT32_MAX 而回绕成小值，"
                  f"malloc 分配的空间偏小，随后按 {count} 个、每个 {size} 字节 memset 会写出缓冲区，存在整数溢出。")
    elif bad:
        reason = (f"函数 {fn} 只限制了 {count} <= {mc}，{size} 没有上限；{count} * {size} 在 uint32_t 中仍可能回绕，"
                  f"导致 malloc({total}) 分配不足，后面的 memset 越界写入，存在整数溢出。")
    elif form == "div":
        reason = (f"函数 {fn} 在相乘前检查 {count} > UINT32_MAX / {size} 并返回 NULL（{size} 已确认不为 0），"
                  f"保证 {count} * {size} 不会超过 UINT32_MAX，不存在整数溢出。")
    else:
        reason = (f"函数 {fn} 把 {count} 限制在 {mc} 以内、{size} 限制在 {ms} 以内，"
                  f"两者乘积的最大值远小于 UINT32_MAX，{total} = {count} * {size} 不会回绕，不存在整数溢出。")
    return c_includes(c, c.render(code)), reason


def io_c_offset(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    bt = f"{d.p}_buffer"
    fn = f"{d.p}_{c.pick('read_chunk', 'copy_range', 'extract', 'slice')}"
    lb = c.var("b", "lb", "src")
    off = c.var("off", "offset", "start")
    ln = c.var("len", "n", "count")
    dst = c.var("dst", "out", "to")
    show = c.chance(0.5)
    if bad:
        check = c.guard(f"{off} + {ln} > {lb}->size", ["return -1;"])
    else:
        check = c.guard(f"{off} > {lb}->size || {ln} > {lb}->size - {off}", ["return -1;"])
    struct = [f"struct {bt} {{", "    char *data;", "    int size;", "};", ""] if show else []
    code = T(r"""
$struct
$doc
int $fn(const struct $bt *$lb, int $off, int $ln, char *$dst)
{
$trace
    if ($lbnull || $dstnull) {
        return -1;
    }
    if ($off < 0 || $ln < 0) {
        return -1;
    }
$check
$pad
    memcpy($dst, $lb->data + $off, (size_t)$ln);
    return $ln;
}
""", struct=struct, doc=c.doc(f"Copies a slice of a {d.noun} buffer."), fn=fn, bt=bt,
          lb=lb, off=off, ln=ln, dst=dst, trace=c.trace(fn), check=check, pad=c.pad(fn),
          lbnull=c.isnull(lb), dstnull=c.isnull(dst))
    if bad:
        reason = (f"函数 {fn} 用 {off} + {ln} > {lb}->size 做边界检查，{off} 和 {ln} 都是 int，"
                  f"两者都很大时相加会超过 INT_MAX 发生有符号整数溢出（结果可能为负），检查被绕过，"
                  f"memcpy 会越界读取 {lb}->data，存在整数溢出。")
    else:
        reason = (f"函数 {fn} 先确认 {off} 和 {ln} 非负，再用 {off} > {lb}->size || {ln} > {lb}->size - {off} 检查范围，"
                  f"{lb}->size - {off} 不会溢出，整个检查中没有可能溢出的加法，不存在整数溢出。")
    return c_includes(c, c.render(code)), reason


def io_c_scale(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    unit_from, unit_to, factor = c.pick(("s", "ms", 1000), ("min", "s", 60),
                                        ("kb", "bytes", 1024), ("ms", "us", 1000))
    fn = f"{d.p}_parse_{c.pick('timeout', 'limit', 'interval', 'quota')}"
    text = c.var("text", "str", "value")
    out = c.var("out", "result", "dst")
    end = c.var("end", "endp", "rest")
    num = c.var("n", "parsed", "amount")
    form = "none" if bad else "div"
    if bad:
        form = c.pick("none", "int_only")
    if form == "div":
        check = c.guard(f"{num} > INT_MAX / {factor}", ["return -1;"])
    elif form == "int_only":
        check = c.guard(f"{num} > INT_MAX", ["return -1;"])
    else:
        check = []
    code = T(r"""
$doc
int $fn(const char *$text, int *$out)
{
    char *$end;
    long $num;

$trace
    errno = 0;
    $num = strtol($text, &$end, 10);
    if (errno == ERANGE) {
        return -1;
    }
    if ($end == $text || *$end != '\0' || $num < 0) {
        return -1;
    }
$check
$pad
    *$out = (int)$num * $factor;
    return 0;
}
""", doc=c.doc(f"Parses a {d.noun} setting given in {unit_from} and returns it in {unit_to}."),
          fn=fn, text=text, out=out, end=end, num=num, trace=c.trace(fn), check=check,
          factor=factor, pad=c.pad(fn))
    if form == "none":
        reason = (f"函数 {fn} 只检查了 {num} 非负，没有上限；(int){num} * {factor} 在 {num} 大于 INT_MAX / {factor} 时"
                  f"发生有符号整数溢出（强制转换为 int 也会截断），得到错误的 *{out}，存在整数溢出。")
    elif form == "int_only":
        reason = (f"函数 {fn} 只检查了 {num} > INT_MAX，保证转换为 int 不截断，但没有考虑乘以 {factor}；"
                  f"{num} 介于 INT_MAX / {factor} 和 INT_MAX 之间时 (int){num} * {factor} 仍会溢出，存在整数溢出。")
    else:
        reason = (f"函数 {fn} 在乘法之前检查 {num} > INT_MAX / {factor} 并返回 -1，"
                  f"{num} 又已确认非负，因此 (int){num} * {factor} 不会超过 INT_MAX，不存在整数溢出。")
    return c_includes(c, c.render(code)), reason


def io_java_sum(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = c.pick("total", "sumOf", "weightedTotal", "aggregate") + camel(d.num)
    lst = c.var(d.jpl, "list", "entries", "batch")
    x = c.var("each", "e", "it", "entry")
    total = c.var("total", "sum", "acc")
    gc, gn = "get" + camel(d.cnt), "get" + camel(d.num)
    skipped = c.var("skipped", "ignored", "empty")
    if bad:
        form = c.pick("int", "long_late")
    else:
        form = c.pick("exact", "long_checked")
    if form == "int":
        pre, step, post = f"int {total} = 0;", [f"{total} += {x}.{gc}() * {x}.{gn}();"], f"return {total};"
    elif form == "long_late":
        pre = f"long {total} = 0;"
        step = [f"{total} += {x}.{gc}() * {x}.{gn}();"]
        post = f"return {total};"
    elif form == "exact":
        pre = f"int {total} = 0;"
        step = [f"{total} = Math.addExact({total}, Math.multiplyExact({x}.{gc}(), {x}.{gn}()));"]
        post = f"return {total};"
    else:
        pre = f"long {total} = 0;"
        step = [f"{total} += (long) {x}.{gc}() * {x}.{gn}();",
                f"if ({total} > Integer.MAX_VALUE || {total} < Integer.MIN_VALUE) {{",
                '    throw new ArithmeticException("total out of int range");',
                "}"]
        post = f"return (int) {total};"
    ret_t = "long" if form == "long_late" else "int"
    code = T(r"""
$doc
public $ret_t $fn(List<$cls> $lst) {
$trace
    if ($lst == null || $lst.isEmpty()) {
        return 0;
    }
    $pre
    int $skipped = 0;
    for ($cls $x : $lst) {
        if ($x.$gc() <= 0) {
            $skipped++;
            continue;
        }
$step
    }
    if ($skipped > 0) {
        $logger.info("$fn: ignored " + $skipped + " of " + $lst.size());
    }
$pad
    $post
}
""", doc=c.doc(f"Returns the sum of {d.cnt} times {d.num} over all {d.jpl}."), ret_t=ret_t,
          fn=fn, cls=d.jcls, lst=lst, trace=c.trace(fn), pre=pre, x=x, gc=gc,
          skipped=skipped, logger=c.pick("LOG", "log", "logger"),
          step=["        " + s for s in step], pad=c.pad(fn), post=post)
    if form == "int":
        reason = (f"方法 {fn} 用 int 累加 {x}.{gc}() * {x}.{gn}()，乘积和累加都可能超过 Integer.MAX_VALUE，"
                  f"Java 的 int 运算会静默回绕，得到错误甚至为负的 {total}，存在整数溢出。")
    elif form == "long_late":
        reason = (f"方法 {fn} 虽然用 long 保存 {total}，但 {x}.{gc}() * {x}.{gn}() 是两个 int 相乘，"
                  f"先按 int 计算、溢出回绕后才提升为 long，单项乘积过大时结果错误，存在整数溢出。")
    elif form == "exact":
        reason = (f"方法 {fn} 使用 Math.multiplyExact 和 Math.addExact 计算，任何一步超出 int 范围都会抛出 "
                  f"ArithmeticException 而不是静默回绕，不存在整数溢出。")
    else:
        reason = (f"方法 {fn} 先把 {x}.{gc}() 转成 long 再相乘，乘积不会溢出，每次累加后都检查 {total} 是否超出 int 范围，"
                  f"超出时抛出异常，最后的 (int) 转换是安全的，不存在整数溢出。")
    return c.render(code), reason


def io_java_array(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = c.pick("read", "decode", "load") + c.pick("Grid", "Table", "Matrix")
    inp = c.var("in", "input", "stream")
    rows = c.var("rows", "height", "nrows")
    cols = c.var("cols", "width", "ncols")
    cells = c.var("cells", "values", "grid")
    r = c.var("r", "y", "row")
    col = c.var("col", "x", "k")
    limit = c.pick("1_000_000", "1 << 20", "4_000_000", "16_777_216")
    form = c.pick("div", "long")
    if bad:
        check = []
    elif form == "div":
        check = c.guard(f"{rows} > {limit} / {cols}", ['throw new IOException("grid too large");'])
    else:
        check = c.guard(f"(long) {rows} * {cols} > {limit}", ['throw new IOException("grid too large");'])
    code = T(r"""
$doc
public int[] $fn(DataInputStream $inp) throws IOException {
    int $rows = $inp.readInt();
    int $cols = $inp.readInt();
$trace
    if ($rows <= 0 || $cols <= 0) {
        throw new IOException("invalid dimensions");
    }
$check
    int[] $cells = new int[$rows * $cols];
    for (int $r = 0; $r < $rows; $r++) {
        for (int $col = 0; $col < $cols; $col++) {
            $cells[$r * $cols + $col] = $inp.readInt();
        }
    }
$pad
    return $cells;
}
""", doc=c.doc(f"Reads a row-major grid of {d.noun} values."), fn=fn, inp=inp, rows=rows,
          cols=cols, trace=c.trace(fn), check=check, cells=cells, r=r, col=col, pad=c.pad(fn))
    if bad:
        reason = (f"{rows} 和 {cols} 直接来自输入流，只确认了它们为正数，方法 {fn} 没有限制 {rows} * {cols}；"
                  f"乘积超过 Integer.MAX_VALUE 时会回绕成负数或较小的正数，数组 {cells} 的长度与实际需要不符，"
                  f"随后 {cells}[{r} * {cols} + {col}] 越界，存在整数溢出。")
    elif form == "div":
        reason = (f"方法 {fn} 在分配前检查 {rows} > {limit} / {cols}（{cols} 已确认为正），"
                  f"保证 {rows} * {cols} 不超过 {limit}，远小于 Integer.MAX_VALUE，不存在整数溢出。")
    else:
        reason = (f"方法 {fn} 用 (long) {rows} * {cols} 计算乘积并与 {limit} 比较，long 乘法不会溢出，"
                  f"通过检查后 int 的乘法和下标 {r} * {cols} + {col} 都在范围内，不存在整数溢出。")
    return c.render(code), reason


TEMPLATES = (
    ("c", io_c_alloc),
    ("c", io_c_offset),
    ("c", io_c_scale),
    ("java", io_java_sum),
    ("java", io_java_array),
)
