"""Code templates for 缓冲区溢出 (buffer overflow).

A loop bound, copy length or index that can reach past the end of an array.

Every template takes (ctx, bad) and returns (code, reason); ``bad`` selects the
defective variant. ``TEMPLATES`` lists them with their language, in the order
the generator uses them round-robin.
"""
from __future__ import annotations

from .common import Ctx, T, c_includes


def bo_loop_bound(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    form = c.pick("strtok", "window")
    if form == "strtok":
        fn = f"{d.p}_{c.pick('split_fields', 'tokenize', 'split_columns')}"
        mx = f"{d.p.upper()}_MAX_{c.pick('FIELDS', 'TOKENS', 'COLUMNS')}"
        size = c.pick(8, 12, 16, 24, 32)
        line = c.var("line", "text", "record")
        fields = c.var("fields", "tokens", "cols")
        n = c.var("n", "count", "nf")
        tok = c.var("tok", "tk", "piece")
        delim = c.pick(",", ";", " \\t", "|")
        op = "<=" if bad else "<"
        code = T(r"""
#define $mx $size

$doc
int $fn(char *$line, char *$fields[$mx])
{
    int $n = 0;
    char *$tok = strtok($line, "$delim");

$trace
    while ($tok != NULL && $n $op $mx) {
        $fields[$n++] = $tok;
        $tok = strtok(NULL, "$delim");
    }
$pad
    return $n;
}
""", mx=mx, size=size, doc=c.doc(f"Splits one {d.noun} line into its fields."), fn=fn,
                 line=line, fields=fields, n=n, tok=tok, delim=delim, trace=c.trace(fn),
                 op=op, pad=c.pad(fn))
        if bad:
            reason = (f"{fields} 只有 {mx}（{size}）个元素，但 while 条件写成 {n} <= {mx}，"
                      f"当 {n} 等于 {mx} 时仍会执行 {fields}[{n}++] = {tok}，写到数组末尾之外，存在缓冲区溢出。")
        else:
            reason = (f"while 循环条件为 {n} < {mx}，{fields}[{n}++] 的下标最大为 {mx} - 1，"
                      f"达到上限后停止写入，{fields} 不会越界，不存在缓冲区溢出。")
        return c_includes(c, c.render(code)), reason

    fn = f"{d.p}_{c.pick('window_avg', 'smooth', 'recent_mean', 'window_sum')}"
    win = f"{d.p.upper()}_WINDOW"
    size = c.pick(8, 16, 32, 64)
    arr = c.var("arr", "list", "src")
    count = c.var("count", "n", "len")
    window = c.var("window", "recent", "ring")
    total = c.var("total", "sum", "acc")
    i = c.var("i", "k", "idx")
    style = c.pick("define", "sizeof")
    if style == "define":
        bound = f"{i} <= {win}" if bad else f"{i} < {win}"
    else:
        bound = (f"{i} < sizeof({window})" if bad
                 else f"{i} < sizeof({window}) / sizeof({window}[0])")
    code = T(r"""
#define $win $size

$doc
long $fn(const struct $st *$arr, size_t $count)
{
    long $window[$win];
    long $total = 0;
    size_t $i;

$trace
    if ($count < $win) {
        return -1;
    }
    for ($i = 0; $bound; $i++) {
        $window[$i] = $arr[$count - $win + $i].$num;
    }
    for ($i = 0; $i < $win; $i++) {
        $total += $window[$i];
    }
$pad
    return $total / $win;
}
""", win=win, size=size, doc=c.doc(f"Returns the mean {d.num} of the most recent entries."),
             fn=fn, st=d.st, arr=arr, count=count, window=window, total=total, i=i,
             trace=c.trace(fn), bound=bound, num=d.num, pad=c.pad(fn))
    if bad and style == "define":
        reason = (f"局部数组 {window} 有 {win} 个元素，第一个 for 循环的条件是 {i} <= {win}，"
                  f"最后一次迭代写入 {window}[{win}]，并读取 {arr}[{count}]，越过数组末尾，存在缓冲区溢出。")
    elif bad:
        reason = (f"sizeof({window}) 是字节数（{win} 个 long，共 {win} * sizeof(long) 字节），不是元素个数；"
                  f"循环条件 {i} < sizeof({window}) 会让 {window}[{i}] 的下标远超 {win} - 1，存在缓冲区溢出。")
    else:
        reason = (f"{window} 有 {win} 个元素，填充循环的上界是 {win} 个元素（{bound}），"
                  f"且函数先确认 {count} >= {win}，{arr}[{count} - {win} + {i}] 也不会越界，不存在缓冲区溢出。")
    return c_includes(c, c.render(code)), reason


def bo_copy_field(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = f"{d.p}_set_{d.name}"
    src = c.var("src", "value", "text", "in")
    ln = c.var("len", "n", "slen")
    size = c.pick(16, 24, 32, 48, 64)
    show_struct = c.chance(0.5)
    off_by_one = bad and c.chance(0.45)
    use_strcpy = bad and not off_by_one and c.chance(0.4)
    if bad and off_by_one:
        check = c.guard(f"{ln} > sizeof({d.v}->{d.name})", ["return -1;"])
    elif bad:
        check = []
    else:
        check = c.guard(f"{ln} >= sizeof({d.v}->{d.name})", ["return -1;"])
    copy = (f"    strcpy({d.v}->{d.name}, {src});" if use_strcpy
            else f"    memcpy({d.v}->{d.name}, {src}, {ln} + 1);")
    struct = [f"struct {d.st} {{", f"    int {d.idf};", f"    char {d.name}[{size}];",
              f"    size_t {d.name}_len;", "};", ""] if show_struct else []
    code = T(r"""
$struct
$doc
int $fn(struct $st *$v, const char *$src)
{
    size_t $ln;

$nguard
$trace
    $ln = strlen($src);
$check
$copy
    $v->${name}_len = $ln;
$pad
    return 0;
}
""", struct=struct, doc=c.doc(f"Sets the {d.name} of a {d.noun}."), fn=fn, st=d.st, v=d.v,
          src=src, ln=ln, nguard=c.guard(f"{c.isnull(d.v)} || {c.isnull(src)}", ["return -1;"]),
          trace=c.trace(fn), check=check, copy=copy, name=d.name, pad=c.pad(fn))
    tgt = f"{d.v}->{d.name}"
    if off_by_one:
        reason = (f"函数 {fn} 的长度检查写成 {ln} > sizeof({tgt})，当 {ln} 恰好等于 sizeof({tgt}) 时检查通过，"
                  f"但 memcpy 复制 {ln} + 1 个字节（含结尾的 '\\0'），比 {tgt} 多写 1 个字节，存在缓冲区溢出。")
    elif bad:
        how = "strcpy" if use_strcpy else f"memcpy 复制 {ln} + 1 个字节"
        reason = (f"{tgt} 是固定大小的字符数组，函数 {fn} 计算了 {ln} = strlen({src}) 却没有与 sizeof({tgt}) 比较，"
                  f"直接用 {how} 写入，{src} 过长时会写出数组边界，存在缓冲区溢出。")
    else:
        reason = (f"函数 {fn} 在复制前检查 {ln} >= sizeof({tgt}) 并返回 -1，"
                  f"因此 memcpy 复制的 {ln} + 1 个字节（含 '\\0'）不会超过 {tgt} 的大小，不存在缓冲区溢出。")
    return c_includes(c, c.render(code)), reason


def bo_histogram(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = f"{d.p}_{c.pick('histogram', 'bucketize', 'count_ranges')}"
    nb = f"{d.p.upper()}_{c.pick('BUCKETS', 'BINS', 'NBUCKETS')}"
    size = c.pick(10, 16, 20, 32, 64)
    vals = d.vals
    count = c.var("count", "n", "len")
    width = c.var("width", "step", "bin_width")
    hist = c.var("hist", "bins", "counts")
    b = c.var("b", "slot", "bucket")
    i = c.var("i", "k", "pos")
    kind = "none" if bad else c.pick("skip", "clamp")
    if bad:
        kind = c.pick("none", "lower_only", "off_by_one")
    if kind == "skip":
        check = c.guard(f"{b} < 0 || {b} >= {nb}", ["continue;"], 2)
    elif kind == "clamp":
        check = (c.guard(f"{b} < 0", [f"{b} = 0;"], 2)
                 + c.guard(f"{b} >= {nb}", [f"{b} = {nb} - 1;"], 2))
    elif kind == "lower_only":
        check = c.guard(f"{b} < 0", ["continue;"], 2)
    elif kind == "off_by_one":
        check = c.guard(f"{b} < 0 || {b} > {nb}", ["continue;"], 2)
    else:
        check = []
    code = T(r"""
#define $nb $size

$doc
void $fn(const int *$vals, size_t $count, int $width, unsigned int $hist[$nb])
{
$trace
    if ($width <= 0) {
        return;
    }
    for (size_t $i = 0; $i < $count; $i++) {
        int $b = $vals[$i] / $width;

$check
        $hist[$b]++;
    }
$pad
}
""", nb=nb, size=size, doc=c.doc(f"Counts {vals} per range of the given width."), fn=fn,
          vals=vals, count=count, width=width, hist=hist, trace=c.trace(fn), i=i, b=b,
          check=check, pad=c.pad(fn))
    if kind == "none":
        reason = (f"下标 {b} = {vals}[{i}] / {width} 完全由输入决定，函数 {fn} 没有检查它是否落在 [0, {nb}) 内"
                  f"就执行 {hist}[{b}]++，值过大或为负时会写出 {hist} 的边界，存在缓冲区溢出。")
    elif kind == "lower_only":
        reason = (f"函数 {fn} 只检查了 {b} < 0，没有检查上界；当 {vals}[{i}] / {width} >= {nb} 时"
                  f" {hist}[{b}]++ 会写到数组之外，存在缓冲区溢出。")
    elif kind == "off_by_one":
        reason = (f"上界检查写成 {b} > {nb}，当 {b} 恰好等于 {nb} 时不会跳过，"
                  f"{hist}[{nb}]++ 越过了只有 {nb} 个元素的 {hist}，存在缓冲区溢出。")
    elif kind == "skip":
        reason = (f"函数 {fn} 在写入前检查 {b} < 0 || {b} >= {nb} 并跳过越界的值，"
                  f"{hist}[{b}] 的下标始终在 0 到 {nb} - 1 之间，且 {width} <= 0 时提前返回，不存在缓冲区溢出。")
    else:
        reason = (f"函数 {fn} 把 {b} 限制在 0 到 {nb} - 1 之间（小于 0 取 0，大于等于 {nb} 取 {nb} - 1），"
                  f"之后才执行 {hist}[{b}]++，不会越界，不存在缓冲区溢出。")
    return c_includes(c, c.render(code)), reason


def bo_packet_parse(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    msg = f"{d.p}_msg"
    fn = f"{d.p}_{c.pick('decode', 'parse_msg', 'unpack', 'read_frame')}"
    mx = f"{d.p.upper()}_MAX_PAYLOAD"
    size = c.pick(64, 128, 256, 512)
    buf = c.var("buf", "wire", "frame", "bytes")
    blen = c.var("len", "buf_len", "avail")
    out = c.var("out", "msg", "dst")
    plen = c.var("plen", "body_len", "n")
    pay = c.pick("payload", "body", "data")
    code = T(r"""
#define $mx $size

struct $msg {
    uint16_t type;
    uint16_t length;
    uint8_t $pay[$mx];
};

$doc
int $fn(const uint8_t *$buf, size_t $blen, struct $msg *$out)
{
    uint16_t $plen;

$trace
    if ($blen < 4) {
        return -1;
    }
    $out->type = (uint16_t)(($buf[0] << 8) | $buf[1]);
    $plen = (uint16_t)(($buf[2] << 8) | $buf[3]);
    if ((size_t)$plen + 4 > $blen) {
        return -1;
    }
$check
$pad
    memcpy($out->$pay, $buf + 4, $plen);
    $out->length = $plen;
    return 0;
}
""", mx=mx, size=size, msg=msg, pay=pay,
          doc=c.doc(f"Decodes a {d.noun} message that starts with a 4-byte header."), fn=fn, buf=buf,
          blen=blen, out=out, plen=plen, trace=c.trace(fn),
          check=[] if bad else c.guard(f"{plen} > sizeof({out}->{pay})", ["return -1;"]),
          pad=c.pad(fn))
    if bad:
        reason = (f"{plen} 取自报文头，最大可到 65535，函数 {fn} 只检查了 {plen} + 4 不超过输入长度 {blen}，"
                  f"没有检查 {plen} 是否超过 {out}->{pay} 的容量 {mx}（{size}），"
                  f"memcpy 会向 {out}->{pay} 写入超长数据，存在缓冲区溢出。")
    else:
        reason = (f"函数 {fn} 既检查了 {plen} + 4 不超过输入长度 {blen}（读取不越界），"
                  f"也检查了 {plen} > sizeof({out}->{pay}) 时返回 -1（写入不越界），"
                  f"memcpy 的长度受两个边界约束，不存在缓冲区溢出。")
    return c_includes(c, c.render(code)), reason


TEMPLATES = (
    ("c", bo_loop_bound),
    ("c", bo_copy_field),
    ("c", bo_histogram),
    ("c", bo_packet_parse),
)
