"""Code templates for 内存泄漏 (memory leak).

Heap memory that one path (an early return, a failed realloc, a partial initialisation,
a loop) never frees.

Every template takes (ctx, bad) and returns (code, reason); ``bad`` selects the
defective variant. ``TEMPLATES`` lists them with their language, in the order
the generator uses them round-robin.
"""
from __future__ import annotations

from .common import Ctx, T, c_includes


def ml_early_return(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = f"{d.p}_{c.pick('parse_record', 'load_fields', 'decode_text', 'read_record')}"
    text = c.var("text", "src", "line")
    n = c.var("n", "len", "size")
    out = c.var("out", "dst", "result")
    copy = c.var("copy", "work", "tmp", "dup")
    tok = c.var("tok", "field", "part")
    nf = c.var("nfields", "count", "idx")
    mxf = c.pick(4, 6, 8)
    miss = c.pick("first", "second") if bad else None
    free1 = [] if miss == "first" else [f"        free({copy});"]
    free2 = [] if miss == "second" else [f"            free({copy});"]
    code = T(r"""
$doc
int $fn(const char *$text, size_t $n, struct $st *$out)
{
    char *$copy;
    char *$tok;
    int $nf = 0;

$trace
    $copy = malloc($n + 1);
$acheck
    memcpy($copy, $text, $n);
    $copy[$n] = '\0';

    if ($copy[0] == '#' || $copy[0] == '\0') {
$free1
        return 0;
    }
    for ($tok = strtok($copy, ";"); $tok != NULL; $tok = strtok(NULL, ";")) {
        if ($nf >= $mxf) {
$free2
            return -1;
        }
        if ($nf == 0) {
            $out->$idf = atoi($tok);
        } else if ($nf == 1) {
            $out->$num = atol($tok);
        }
        $nf++;
    }
$pad
    free($copy);
    return $nf;
}
""", doc=c.doc(f"Parses a ';'-separated {d.noun} record."), fn=fn, text=text, n=n,
          st=d.st, out=out, copy=copy, tok=tok, nf=nf, trace=c.trace(fn),
          acheck=c.guard(c.isnull(copy), ["return -1;"]), free1=free1, free2=free2,
          mxf=mxf, idf=d.idf, num=d.num, pad=c.pad(fn))
    if miss == "first":
        reason = (f"函数 {fn} 用 malloc 分配了 {copy}，当 {copy} 以 '#' 开头或为空串时直接 return 0，"
                  f"这条提前返回的路径没有 free({copy})，分配的内存丢失，存在内存泄漏。")
    elif miss == "second":
        reason = (f"函数 {fn} 在循环中发现字段数 {nf} >= {mxf} 时直接 return -1，"
                  f"这条错误路径没有释放 malloc 得到的 {copy}，存在内存泄漏。")
    else:
        reason = (f"函数 {fn} 中 {copy} 由 malloc 分配，注释行/空行的提前返回、字段过多的错误返回以及正常结束"
                  f"三条路径都在返回前调用了 free({copy})，分配失败时没有需要释放的内存，不存在内存泄漏。")
    return c_includes(c, c.render(code)), reason


def ml_realloc(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = f"{d.p}_{c.pick('append', 'push', 'add')}"
    src = c.var("src", "elem", "item_in", "e")
    used = c.pick("count", "used", "len")
    cap = c.pick("cap", "capacity", "alloc")
    ncap = c.var("new_cap", "ncap", "grown")
    tmp = c.var("tmp", "grown_items", "p")
    target = f"{d.tv}->{d.items}"
    if bad:
        grow = [f"        {target} = realloc({target}, {ncap} * sizeof(*{target}));",
                *c.guard(c.isnull(target), ["return -1;"], 2)]
    else:
        grow = [f"        struct {d.st} *{tmp} = realloc({target}, {ncap} * sizeof(*{tmp}));",
                "",
                *c.guard(c.isnull(tmp), ["return -1;"], 2),
                f"        {target} = {tmp};"]
    code = T(r"""
$doc
int $fn(struct $tbl *$tv, const struct $st *$src)
{
$trace
    if ($tv->$used == $tv->$cap) {
        size_t $ncap = $tv->$cap ? $tv->$cap * 2 : $init;

$grow
        $tv->$cap = $ncap;
    }
$pad
    $tv->$items[$tv->$used++] = *$src;
    return 0;
}
""", doc=c.doc(f"Appends a {d.noun} to the growable array."), fn=fn, tbl=d.tbl, tv=d.tv,
          st=d.st, src=src, trace=c.trace(fn), used=used, cap=cap, ncap=ncap,
          init=c.pick("8", "16", "4"), grow=grow, items=d.items, pad=c.pad(fn))
    if bad:
        reason = (f"函数 {fn} 把 realloc 的结果直接赋给 {target}；realloc 失败时返回 NULL 而原内存块不会被释放，"
                  f"此时 {target} 被覆盖为 NULL，原来的数组再也无法释放，存在内存泄漏。")
    else:
        reason = (f"函数 {fn} 先把 realloc 的结果保存到临时变量 {tmp}，失败时直接返回 -1，"
                  f"原数组仍由 {target} 持有，成功后才赋值给 {target}，不会丢失已分配的内存，不存在内存泄漏。")
    return c_includes(c, c.render(code)), reason


def ml_partial_init(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = f"{d.p}_{c.pick('table_new', 'create_table', 'open_table', 'table_init')}"
    cap = c.var("cap", "capacity", "n")
    lbl = c.var("label", "title", "owner_name")
    used = c.pick("count", "used", "len")
    three = c.chance(0.5)
    miss = None
    if bad:
        miss = c.pick("items", "label") if three else "items"
    items_free = [] if miss == "items" else [f"        free({d.tv});"]
    label_free = ([f"        free({d.tv}->{d.items});"] if miss == "label"
                  else [f"        free({d.tv}->{d.items});", f"        free({d.tv});"])
    label_part = []
    if three:
        label_part = [f"    {d.tv}->name = strdup({lbl});",
                      f"    if ({c.isnull(d.tv + '->name')}) {{", *label_free, "        return NULL;", "    }"]
    params = f"size_t {cap}, const char *{lbl}" if three else f"size_t {cap}"
    code = T(r"""
$doc
struct $tbl *$fn($params)
{
    struct $tbl *$tv = malloc(sizeof(*$tv));

$trace
$acheck
    $tv->$items = calloc($cap, sizeof(*$tv->$items));
    if ($isnull) {
$items_free
        return NULL;
    }
$label
$pad
    $tv->$used = 0;
    $tv->capacity = $cap;
    return $tv;
}
""", doc=c.doc(f"Creates an empty {d.noun} table with room for the given number of entries."),
          tbl=d.tbl, fn=fn, params=params, tv=d.tv, trace=c.trace(fn),
          acheck=c.guard(c.isnull(d.tv), ["return NULL;"]), items=d.items, cap=cap,
          isnull=c.isnull(f"{d.tv}->{d.items}"), items_free=items_free, label=label_part,
          pad=c.pad(fn), used=used)
    if miss == "items":
        reason = (f"函数 {fn} 先 malloc 了 {d.tv}，之后 calloc {d.tv}->{d.items} 失败时直接 return NULL，"
                  f"没有 free({d.tv})，第一次分配的内存丢失，存在内存泄漏。")
    elif miss == "label":
        reason = (f"函数 {fn} 在 strdup({lbl}) 失败时只释放了 {d.tv}->{d.items}，没有释放 {d.tv} 本身就 return NULL，"
                  f"结构体 {d.tv} 的内存丢失，存在内存泄漏。")
    elif three:
        reason = (f"函数 {fn} 依次分配 {d.tv}、{d.tv}->{d.items} 和 {d.tv}->name，每个失败分支都释放了之前已经分配成功的内存"
                  f"（calloc 失败时 free({d.tv})，strdup 失败时先释放 {d.items} 再释放 {d.tv}），不存在内存泄漏。")
    else:
        reason = (f"函数 {fn} 在 calloc {d.tv}->{d.items} 失败时先 free({d.tv}) 再返回 NULL，"
                  f"成功时所有内存都交给返回的 {d.tv} 持有，不存在内存泄漏。")
    return c_includes(c, c.render(code)), reason


def ml_loop_strdup(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = f"{d.p}_{c.pick('sum_values', 'total_from_lines', 'accumulate')}"
    lines = c.var("lines", "rows", "strs")
    count = c.var("count", "n", "nlines")
    total = c.var("total", "sum", "out_total")
    i = c.var("i", "k", "j")
    work = c.var("work", "copy", "tmp")
    colon = c.var("colon", "sep", "mark")
    form = c.pick("tail", "continue")
    if form == "tail":
        body = [f"        {colon} = strchr({work}, ':');",
                *c.guard(c.notnull(colon), [f"*{colon} = '\\0';",
                                            f"*{total} += strtol({colon} + 1, NULL, 10);"], 2)]
        if not bad:
            body.append(f"        free({work});")
    else:
        skip = ["continue;"] if bad else [f"free({work});", "continue;"]
        body = [f"        {colon} = strchr({work}, ':');",
                *c.guard(c.isnull(colon), skip, 2),
                f"        *{colon} = '\\0';",
                f"        *{total} += strtol({colon} + 1, NULL, 10);",
                f"        free({work});"]
    code = T(r"""
$doc
int $fn(char **$lines, size_t $count, long *$total)
{
    size_t $i;

$trace
    *$total = 0;
    for ($i = 0; $i < $count; $i++) {
        char *$work = strdup($lines[$i]);
        char *$colon;

$wcheck
$body
    }
$pad
    return 0;
}
""", doc=c.doc(f"Adds up the numbers found after ':' in each {d.noun} line."), fn=fn,
          lines=lines, count=count, total=total, i=i, trace=c.trace(fn), work=work,
          colon=colon, wcheck=c.guard(c.isnull(work), ["return -1;"], 2), body=body,
          pad=c.pad(fn))
    if bad and form == "tail":
        reason = (f"函数 {fn} 在每次循环中用 strdup 为 {work} 分配内存，但循环体结束时没有 free({work})，"
                  f"每处理一行就丢失一块内存，存在内存泄漏。")
    elif bad:
        reason = (f"函数 {fn} 每次循环都 strdup 出 {work}，当该行不含 ':'（{colon} 为 NULL）时直接 continue，"
                  f"跳过了循环末尾的 free({work})，这块内存再也无法释放，存在内存泄漏。")
    elif form == "tail":
        reason = (f"函数 {fn} 每次循环 strdup 得到的 {work} 都在本次循环结束前 free({work})，"
                  f"strdup 失败时没有分配成功的内存需要释放，不存在内存泄漏。")
    else:
        reason = (f"函数 {fn} 中 {work} 在两条路径上都被释放：不含 ':' 时先 free({work}) 再 continue，"
                  f"正常处理后在循环末尾 free({work})，不存在内存泄漏。")
    return c_includes(c, c.render(code)), reason


TEMPLATES = (
    ("c", ml_early_return),
    ("c", ml_realloc),
    ("c", ml_partial_init),
    ("c", ml_loop_strdup),
)
