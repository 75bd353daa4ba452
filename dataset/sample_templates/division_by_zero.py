"""Code templates for 除零 (division by zero).

A divisor (a count, a range, a bucket number, a time span) that can be zero.

Every template takes (ctx, bad) and returns (code, reason); ``bad`` selects the
defective variant. ``TEMPLATES`` lists them with their language, in the order
the generator uses them round-robin.
"""
from __future__ import annotations

from .common import Ctx, T, c_includes, camel


def dz_c_average(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = f"{d.p}_{c.pick('average', 'mean', 'avg')}_{d.num}"
    arr = c.var("arr", "list", "items_in")
    n = c.var("n", "count", "len")
    total = c.var("sum", "total", "acc")
    out_total = c.var("out_total", "total_out", "sum_out")
    i = c.var("i", "k", "idx")
    form = c.pick("early", "ternary") if not bad else c.pick("none", "ptr_only")
    guard = []
    if form == "early":
        guard = c.guard(f"{n} == 0", ["return 0;"])
    elif form == "ptr_only":
        guard = c.guard(c.isnull(arr), ["return 0;"])
    ret = (f"    return {n} ? {total} / (long){n} : 0;" if form == "ternary"
           else f"    return {total} / (long){n};")
    code = T(r"""
$doc
long $fn(const struct $st *$arr, size_t $n, long *$out_total)
{
    long $total = 0;
    size_t $i;

$trace
$guard
    for ($i = 0; $i < $n; $i++) {
        $total += $arr[$i].$num;
    }
    if ($ot_nn) {
        *$out_total = $total;
    }
$pad
$ret
}
""", doc=c.doc(f"Returns the average {d.num} over an array of {d.noun}s."), fn=fn,
          st=d.st, arr=arr, n=n, total=total, i=i, trace=c.trace(fn), guard=guard,
          num=d.num, pad=c.pad(fn), ret=ret, out_total=out_total, ot_nn=c.notnull(out_total))
    if form == "none":
        reason = (f"函数 {fn} 最后执行 {total} / (long){n}，但没有检查 {n} 是否为 0；"
                  f"传入空数组（{n} == 0）时会发生整数除零，存在除零缺陷。")
    elif form == "ptr_only":
        reason = (f"函数 {fn} 只检查了 {arr} 是否为 NULL，没有检查元素个数 {n}；"
                  f"{n} 为 0 时 {total} / (long){n} 是整数除零，存在除零缺陷。")
    elif form == "early":
        reason = (f"函数 {fn} 在开头检查 {n} == 0 并返回 0，执行 {total} / (long){n} 时 {n} 一定不为 0，不存在除零缺陷。")
    else:
        reason = (f"函数 {fn} 返回时使用 {n} ? {total} / (long){n} : 0，只有 {n} 非 0 时才做除法，不存在除零缺陷。")
    return c_includes(c, c.render(code)), reason


def dz_c_range(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = f"{d.p}_{c.pick('normalize', 'to_percent', 'rescale')}"
    vals = d.vals
    count = c.var("count", "n", "len")
    out = c.var("out", "pct", "scaled")
    lo = c.var("lo", "min_v", "low")
    hi = c.var("hi", "max_v", "high")
    rng_ = c.var("range", "span", "spread")
    i = c.var("i", "k", "j")
    check = [] if bad else [f"    if ({rng_} == 0) {{",
                            f"        memset({out}, 0, {count} * sizeof(*{out}));",
                            "        return 0;", "    }"]
    code = T(r"""
$doc
int $fn(const int *$vals, size_t $count, int *$out)
{
    int $lo, $hi, $rng;
    size_t $i;

$trace
    if ($count == 0) {
        return -1;
    }
    $lo = $hi = $vals[0];
    for ($i = 1; $i < $count; $i++) {
        if ($vals[$i] < $lo) {
            $lo = $vals[$i];
        }
        if ($vals[$i] > $hi) {
            $hi = $vals[$i];
        }
    }
    $rng = $hi - $lo;
$check
$pad
    for ($i = 0; $i < $count; $i++) {
        $out[$i] = ($vals[$i] - $lo) * 100 / $rng;
    }
    return 0;
}
""", doc=c.doc(f"Maps {vals} onto a 0..100 scale."), fn=fn, vals=vals, count=count, out=out,
          lo=lo, hi=hi, rng=rng_, i=i, trace=c.trace(fn), check=check, pad=c.pad(fn))
    if bad:
        reason = (f"函数 {fn} 用 {rng_} = {hi} - {lo} 作为除数，当所有 {vals} 相等（包括只有一个元素）时 {rng_} 为 0，"
                  f"({vals}[{i}] - {lo}) * 100 / {rng_} 会整数除零；开头只检查了 {count} == 0，存在除零缺陷。")
    else:
        reason = (f"函数 {fn} 在做除法前检查 {rng_} == 0（所有值相等的情况），此时把 {out} 全部置 0 并返回，"
                  f"后面的 / {rng_} 只在 {rng_} 非 0 时执行，不存在除零缺陷。")
    return c_includes(c, c.render(code)), reason


def dz_c_bucket(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = f"{d.p}_{c.pick('lookup', 'find_by_' + d.name, 'hash_find')}"
    key = c.var("key", "name", "k")
    h = c.var("h", "hash", "hv")
    e = c.var("e", "cur", "node")
    cp = c.var("cp", "p", "ch")
    nb = c.pick("nbuckets", "bucket_count", "nslots")
    bk = c.pick("buckets", "slots", "heads")
    form = c.pick("guard", "combined") if not bad else c.pick("none", "key_only")
    guard = []
    if form == "guard":
        guard = c.guard(f"{d.tv}->{nb} == 0", ["return NULL;"])
    elif form == "combined":
        guard = c.guard(f"{c.isnull(key)} || {d.tv}->{nb} == 0", ["return NULL;"])
    elif form == "key_only":
        guard = c.guard(c.isnull(key), ["return NULL;"])
    code = T(r"""
$doc
struct $st *$fn(struct $tbl *$tv, const char *$key)
{
    unsigned long $h = 5381;
    const unsigned char *$cp;
    struct $st *$e;

$trace
$guard
    for ($cp = (const unsigned char *)$key; *$cp != '\0'; $cp++) {
        $h = $h * 33 + *$cp;
    }
$pad
    for ($e = $tv->$bk[$h % $tv->$nb]; $e_nn; $e = $e->next) {
        if (strcmp($e->$name, $key) == 0) {
            return $e;
        }
    }
    return NULL;
}
""", doc=c.doc(f"Finds the {d.noun} with the given {d.name} in the hash table."),
          st=d.st, fn=fn, tbl=d.tbl, tv=d.tv, key=key, h=h, cp=cp, trace=c.trace(fn),
          guard=guard, pad=c.pad(fn), bk=bk, nb=nb, e=e, e_nn=c.notnull(e), name=d.name)
    if form in ("none", "key_only"):
        extra = f"函数只检查了 {key} 是否为 NULL，" if form == "key_only" else ""
        reason = (f"函数 {fn} 用 {h} % {d.tv}->{nb} 计算桶下标，{extra}没有检查桶数 {d.tv}->{nb} 是否为 0；"
                  f"表尚未分配桶（{nb} 为 0）时取模运算就是除零，存在除零缺陷。")
    else:
        reason = (f"函数 {fn} 在计算 {h} % {d.tv}->{nb} 之前检查了 {d.tv}->{nb} == 0 并返回 NULL，"
                  f"取模时除数一定不为 0，之后只是遍历桶内链表，不存在除零缺陷。")
    return c_includes(c, c.render(code)), reason


def dz_java_rate(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = c.pick("throughputSummary", "rateReport", "describeRate") + c.pick("", "For" + camel(d.jpl))
    amount = c.var("processed", "total", "count")
    start = c.var("startMillis", "begin", "t0")
    end = c.var("endMillis", "finish", "t1")
    el = c.var("elapsedSeconds", "seconds", "secs")
    rate = c.var("rate", "perSec", "speed")
    sb = c.var("sb", "text", "msg")
    form = "none" if bad else c.pick("le_zero", "max")
    if bad:
        form = c.pick("none", "neg_only")
    decl = f"    long {el} = ({end} - {start}) / 1000;"
    if form == "max":
        decl = f"    long {el} = Math.max(1, ({end} - {start}) / 1000);"
    guard = []
    if form == "le_zero":
        guard = c.guard(f"{el} <= 0", [f'return {amount} + " {d.jpl} in under a second";'])
    elif form == "neg_only":
        guard = c.guard(f"{el} < 0", ['throw new IllegalArgumentException("clock went backwards");'])
    code = T(r"""
$doc
public String $fn(long $amount, long $start, long $end) {
$trace
    if ($amount < 0) {
        throw new IllegalArgumentException("negative count: " + $amount);
    }
$decl
$guard
$pad
    long $rate = $amount / $el;
    StringBuilder $sb = new StringBuilder();
    $sb.append($amount).append(" $jpl in ").append($el).append(" s");
    $sb.append(" (").append($rate).append("/s)");
    return $sb.toString();
}
""", doc=c.doc(f"Describes how many {d.jpl} were handled per second."), fn=fn, amount=amount,
          start=start, end=end, trace=c.trace(fn), decl=decl, guard=guard, pad=c.pad(fn), el=el,
          rate=rate, sb=sb, jpl=d.jpl)
    if form == "none":
        reason = (f"方法 {fn} 中 {el} = ({end} - {start}) / 1000，耗时不足 1 秒时整数除法结果为 0，"
                  f"随后 {amount} / {el} 会抛出 ArithmeticException；开头只检查了 {amount} 是否为负，存在除零缺陷。")
    elif form == "neg_only":
        reason = (f"方法 {fn} 只检查了 {el} < 0，没有处理 {el} == 0；耗时不足 1 秒时 ({end} - {start}) / 1000 为 0，"
                  f"{amount} / {el} 会抛出 ArithmeticException，存在除零缺陷。")
    elif form == "le_zero":
        reason = (f"方法 {fn} 在除法前检查 {el} <= 0 并直接返回描述字符串，执行 {amount} / {el} 时除数一定大于 0，不存在除零缺陷。")
    else:
        reason = (f"方法 {fn} 用 Math.max(1, ...) 计算 {el}，保证除数至少为 1，{amount} / {el} 不会除零，不存在除零缺陷。")
    return c.render(code), reason


def dz_java_percent(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = c.pick("percentActive", "completionPercent", "shareNonEmpty") + c.pick("", "Of" + camel(d.jpl))
    lst = c.var(d.jpl, "list", "batch")
    done = c.var("done", "active", "matched")
    stale = c.var("stale", "negative", "odd")
    x = c.var("each", "e", "it")
    gc = "get" + camel(d.cnt)
    form = c.pick("empty", "size_zero") if not bad else c.pick("none", "null_only")
    guard = []
    if form == "empty":
        guard = c.guard(f"{lst} == null || {lst}.isEmpty()", ["return 0;"])
    elif form == "size_zero":
        guard = c.guard(f"{lst}.size() == 0", ["return 100;"])
    elif form == "null_only":
        guard = c.guard(f"{lst} == null", ["return 0;"])
    code = T(r"""
$doc
public int $fn(List<$cls> $lst) {
$trace
$guard
    int $done = 0;
    int $stale = 0;
    for ($cls $x : $lst) {
        if ($x.$gc() > 0) {
            $done++;
        } else if ($x.$gn() < 0) {
            $stale++;
        }
    }
    if ($stale > 0) {
        $logger.warning($stale + " $jpl have a negative $num");
    }
$pad
    return (int) ($done * 100L / $lst.size());
}
""", doc=c.doc(f"Returns the percentage of {d.jpl} with a positive {d.cnt}."), fn=fn,
          cls=d.jcls, lst=lst, trace=c.trace(fn), guard=guard, done=done, x=x, gc=gc,
          gn="get" + camel(d.num), stale=stale, logger=c.pick("LOG", "log", "logger"),
          jpl=d.jpl, num=d.num, pad=c.pad(fn))
    if form == "none":
        reason = (f"方法 {fn} 用 {lst}.size() 作除数，但没有处理空列表；{lst} 为空时 {done} * 100L / 0 "
                  f"会抛出 ArithmeticException，存在除零缺陷。")
    elif form == "null_only":
        reason = (f"方法 {fn} 只检查了 {lst} == null，没有检查列表是否为空；空列表时 {lst}.size() 为 0，"
                  f"{done} * 100L / {lst}.size() 会抛出 ArithmeticException，存在除零缺陷。")
    else:
        reason = (f"方法 {fn} 在开头处理了空列表（{lst}.size() 为 0 时直接返回），"
                  f"执行 / {lst}.size() 时除数至少为 1，不存在除零缺陷。")
    return c.render(code), reason


TEMPLATES = (
    ("c", dz_c_average),
    ("c", dz_c_range),
    ("c", dz_c_bucket),
    ("java", dz_java_rate),
    ("java", dz_java_percent),
)
