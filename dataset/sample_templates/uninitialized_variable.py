"""Code templates for 未初始化变量 (uninitialised variable).

A variable that one branch, switch case or loop leaves unset before it is read.

Every template takes (ctx, bad) and returns (code, reason); ``bad`` selects the
defective variant. ``TEMPLATES`` lists them with their language, in the order
the generator uses them round-robin.
"""
from __future__ import annotations

from .common import Ctx, T, c_includes


def uv_if_chain(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    w0, w1, w2 = d.words
    fn = f"{d.p}_{c.pick('parse_kind', 'kind_from_str', 'map_name', 'classify')}"
    s = c.var("s", "name", "text")
    val = c.var("kind", "level", "code", "result")
    form = c.pick("else", "init") if not bad else "none"
    decl = f"    int {val} = -1;" if form == "init" else f"    int {val};"
    else_ = ["    } else {", f"        {val} = -1;"] if form == "else" else []
    code = T(r"""
$doc
int $fn(const char *$s)
{
$decl

$trace
    if (strcmp($s, "$w0") == 0) {
        $val = 0;
    } else if (strcmp($s, "$w1") == 0) {
        $val = 1;
    } else if (strcmp($s, "$w2") == 0) {
        $val = 2;
$else
    }
$pad
    return $val;
}
""", doc=c.doc(f"Maps a {d.noun} keyword to its numeric code."), fn=fn, s=s, decl=decl,
          trace=c.trace(fn), w0=w0, w1=w1, w2=w2, val=val, pad=c.pad(fn), **{"else": else_})
    if bad:
        reason = (f"函数 {fn} 中局部变量 {val} 声明时没有初始化，只在 {s} 等于 \"{w0}\"、\"{w1}\"、\"{w2}\" 时赋值，"
                  f"if/else if 链没有 else 分支，传入其它字符串时 return {val} 会返回未初始化的值，存在未初始化变量。")
    elif form == "init":
        reason = (f"函数 {fn} 在声明时把 {val} 初始化为 -1，三个分支都不匹配时返回的也是这个确定值，"
                  f"所有路径上 {val} 都已初始化，不存在未初始化变量。")
    else:
        reason = (f"函数 {fn} 的 if/else if 链以 else 分支结尾，其中把 {val} 设为 -1，"
                  f"任何输入都会走到某个赋值分支，return {val} 时它一定已初始化，不存在未初始化变量。")
    return c_includes(c, c.render(code)), reason


def uv_switch(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = f"{d.p}_{c.pick('scaled', 'normalized', 'in_base_units')}_{d.num}"
    kind = c.pick("unit", "kind", "mode")
    factor = c.var("factor", "mult", "scale_by")
    fs = c.pick((1, 1000, 1000000), (1, 60, 3600), (1, 1024, 1048576), (1, 10, 100))
    form = "none" if bad else c.pick("default", "init")
    decl = f"    long {factor} = 0;" if form == "init" else f"    long {factor};"
    default = ["    default:", f"        {factor} = 0;", "        break;"] if form == "default" else []
    ind_case = c.chance(0.5)
    case_block = [
        "    case 0:", f"        {factor} = {fs[0]};", "        break;",
        "    case 1:", f"        {factor} = {fs[1]};", "        break;",
        "    case 2:", f"        {factor} = {fs[2]};", "        break;",
        *default]
    if ind_case:
        case_block = ["    " + line for line in case_block]
    code = T(r"""
$doc
long $fn(const struct $st *$v)
{
$decl

$trace
    switch ($v->$kind) {
$cases
    }
$pad
    return $v->$num * $factor;
}
""", doc=c.doc(f"Converts the {d.num} of a {d.noun} to base units."), fn=fn, st=d.st,
          v=d.v, decl=decl, trace=c.trace(fn), kind=kind, cases=case_block, num=d.num,
          factor=factor, pad=c.pad(fn))
    if bad:
        reason = (f"函数 {fn} 中 {factor} 没有初始化，switch ({d.v}->{kind}) 只处理了 0、1、2 三种取值且没有 default 分支，"
                  f"{kind} 为其它值时 {factor} 未被赋值就参与 {d.v}->{d.num} * {factor} 的计算，存在未初始化变量。")
    elif form == "default":
        reason = (f"函数 {fn} 的 switch 带有 default 分支，把 {factor} 设为 0，"
                  f"{d.v}->{kind} 取任何值 {factor} 都会被赋值，不存在未初始化变量。")
    else:
        reason = (f"函数 {fn} 在声明时把 {factor} 初始化为 0，switch 没有匹配的情况下使用的也是这个值，"
                  f"不存在未初始化变量。")
    return c_includes(c, c.render(code)), reason


def uv_search_index(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = f"{d.p}_{d.num}_of"
    key = c.var("key", "id", "wanted")
    i = c.var("i", "k", "j")
    pos = c.var("pos", "found", "at")
    used = c.pick("count", "used", "len")
    if bad:
        decl = f"    size_t {pos};"
        after = []
    else:
        decl = f"    size_t {pos} = {d.tv}->{used};"
        after = c.guard(f"{pos} == {d.tv}->{used}", ["return -1;"])
    code = T(r"""
$doc
long $fn(const struct $tbl *$tv, int $key)
{
    size_t $i;
$decl

$trace
    for ($i = 0; $i < $tv->$used; $i++) {
        if ($tv->$items[$i].$idf == $key) {
            $pos = $i;
            break;
        }
    }
$after
$pad
    return $tv->$items[$pos].$num;
}
""", doc=c.doc(f"Returns the {d.num} of the {d.noun} with the given id."), fn=fn, tbl=d.tbl,
          tv=d.tv, key=key, i=i, decl=decl, trace=c.trace(fn), used=used, items=d.items,
          idf=d.idf, pos=pos, after=after, pad=c.pad(fn), num=d.num)
    if bad:
        reason = (f"函数 {fn} 中 {pos} 没有初始化，只有找到 {d.idf} == {key} 的元素时才在循环里赋值；"
                  f"找不到时循环结束后直接用未初始化的 {pos} 作为下标访问 {d.tv}->{d.items}，存在未初始化变量。")
    else:
        reason = (f"函数 {fn} 把 {pos} 初始化为 {d.tv}->{used} 作为“未找到”的标记，"
                  f"循环后若仍等于该值就返回 -1，否则 {pos} 一定在循环中被赋过值，不存在未初始化变量。")
    return c_includes(c, c.render(code)), reason


def uv_accumulator(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = f"{d.p}_{c.pick('summarize', 'stats', 'sum_and_max')}"
    arr = c.var("arr", "list", "src")
    n = c.var("n", "count", "len")
    total = c.var("sum", "total", "acc")
    mx = c.var("max", "peak", "top")
    osum = c.var("out_sum", "sum_out", "total_out")
    omax = c.var("out_max", "max_out", "peak_out")
    i = c.var("i", "k", "j")
    form = c.pick("decl", "assign")
    if form == "decl":
        decls = [f"    long {total}{'' if bad else ' = 0'};", f"    long {mx} = LONG_MIN;"]
        inits = []
    else:
        decls = [f"    long {total}, {mx};"]
        inits = ([] if bad else [f"    {total} = 0;"]) + [f"    {mx} = {arr}[0].{d.num};"]
    code = T(r"""
$doc
int $fn(const struct $st *$arr, size_t $n, long *$osum, long *$omax)
{
$decls
    size_t $i;

$trace
    if ($n == 0) {
        return -1;
    }
$inits
    for ($i = 0; $i < $n; $i++) {
        $total += $arr[$i].$num;
        if ($arr[$i].$num > $mx) {
            $mx = $arr[$i].$num;
        }
    }
$pad
    *$osum = $total;
    *$omax = $mx;
    return 0;
}
""", doc=c.doc(f"Computes the sum and the maximum {d.num} of the {d.noun}s."), fn=fn,
          st=d.st, arr=arr, n=n, osum=osum, omax=omax, decls=decls, i=i, trace=c.trace(fn),
          inits=inits, total=total, num=d.num, mx=mx, pad=c.pad(fn))
    if bad:
        how = f"{mx} 有初值，但" if form == "decl" else f"循环前只给 {mx} 赋了初值，"
        reason = (f"函数 {fn} 中 {how}累加变量 {total} 从未初始化，第一次执行 {total} += {arr}[{i}].{d.num} 时"
                  f"读取的是不确定的值，写回 *{osum} 的结果也不确定，存在未初始化变量。")
    else:
        reason = (f"函数 {fn} 在循环前把 {total} 初始化为 0、{mx} 初始化为"
                  f"{' LONG_MIN' if form == 'decl' else f' {arr}[0].{d.num}'}，"
                  f"循环中的累加和比较都基于已初始化的值，不存在未初始化变量。")
    return c_includes(c, c.render(code)), reason


TEMPLATES = (
    ("c", uv_if_chain),
    ("c", uv_switch),
    ("c", uv_search_index),
    ("c", uv_accumulator),
)
