"""Code templates for 释放后使用 (use after free).

Memory that is read or written after it was freed (logging, list removal, a stale cache
pointer, an error path).

Every template takes (ctx, bad) and returns (code, reason); ``bad`` selects the
defective variant. ``TEMPLATES`` lists them with their language, in the order
the generator uses them round-robin.
"""
from __future__ import annotations

from .common import Ctx, T, c_includes


def uaf_log_after_free(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = f"{d.p}_{c.pick('release', 'destroy', 'drop', 'retire')}"
    ident = c.var("id", "saved_id", "old_id")
    slot = c.var("slot", "pos", "at")
    used = c.pick("count", "used", "active")
    logf = c.pick(f"{d.p}_log", "log_info", "syslog_note")
    if bad:
        order = [f"    free({d.v});", f"    {ident} = {d.v}->{d.idf};"]
    else:
        order = [f"    {ident} = {d.v}->{d.idf};", f"    free({d.v});"]
    code = T(r"""
$doc
void $fn(struct $tbl *$tv, size_t $slot)
{
    struct $st *$v;
    int $ident;

$trace
    if ($slot >= $tv->$used) {
        return;
    }
    $v = $tv->$items[$slot];
    $tv->$items[$slot] = $tv->$items[$tv->$used - 1];
    $tv->$items[$tv->$used - 1] = NULL;
    $tv->$used--;
    free($v->$buf);
$order
$pad
    $logf("released $noun %d", $ident);
}
""", doc=c.doc(f"Removes the {d.noun} in the given slot and frees it."), fn=fn, tbl=d.tbl,
          tv=d.tv, st=d.st, v=d.v, ident=ident, trace=c.trace(fn), used=used, buf=d.buf,
          order=order, pad=c.pad(fn), logf=logf, noun=d.noun, slot=slot, items=d.items)
    if bad:
        reason = (f"函数 {fn} 先执行 free({d.v})，下一行才读取 {d.v}->{d.idf} 赋给 {ident}，"
                  f"此时 {d.v} 指向的内存已经释放，读取已释放的内存，存在释放后使用。")
    else:
        reason = (f"函数 {fn} 在 free({d.v}) 之前就把 {d.v}->{d.idf} 保存到局部变量 {ident}，"
                  f"释放之后只使用 {ident}，不再访问 {d.v}，不存在释放后使用。")
    return c_includes(c, c.render(code)), reason


def uaf_list_remove(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    node = f"{d.p}_node"
    fn = f"{d.p}_{c.pick('remove_all', 'purge', 'delete_matching')}"
    head = c.var("head", "list", "first")
    key = c.var("key", "id", "wanted")
    cur = c.var("cur", "n", "it")
    prev = c.var("prev", "before", "last")
    nxt = c.var("next", "nxt", "after")
    removed = c.var("removed", "dropped", "count")
    unlink = [f"            if ({c.notnull(prev)}) {{",
              f"                {prev}->next = {cur}->next;",
              "            } else {",
              f"                *{head} = {cur}->next;",
              "            }"]
    if bad:
        hit = [*unlink, f"            free({cur});", f"            {removed}++;",
               f"            {cur} = {cur}->next;"]
    else:
        hit = [f"            struct {node} *{nxt} = {cur}->next;", "", *unlink,
               f"            free({cur});", f"            {removed}++;",
               f"            {cur} = {nxt};"]
    code = T(r"""
$doc
int $fn(struct $node **$head, int $key)
{
    struct $node *$cur = *$head;
    struct $node *$prev = NULL;
    int $removed = 0;

$trace
    while ($cur != NULL) {
        if ($cur->$idf == $key) {
$hit
        } else {
            $prev = $cur;
            $cur = $cur->next;
        }
    }
$pad
    return $removed;
}
""", doc=c.doc(f"Removes every {d.noun} node whose id matches."), fn=fn, node=node,
          head=head, key=key, cur=cur, prev=prev, removed=removed, trace=c.trace(fn),
          idf=d.idf, hit=hit, pad=c.pad(fn))
    if bad:
        reason = (f"函数 {fn} 在删除匹配节点时先 free({cur})，随后执行 {cur} = {cur}->next，"
                  f"读取了已释放节点的 next 字段，存在释放后使用。")
    else:
        reason = (f"函数 {fn} 在 free({cur}) 之前把 {cur}->next 保存到 {nxt}，释放后用 {nxt} 继续遍历，"
                  f"不再访问已释放的 {cur}，不存在释放后使用。")
    return c_includes(c, c.render(code)), reason


def uaf_stale_cache(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    ctx_t = f"{d.p}_ctx"
    fn = f"{d.p}_{c.pick('cache_put', 'remember', 'store_text', 'cache_text')}"
    x = c.var("ctx", "cx", "state")
    src = c.var("src", "text", "value")
    cache = c.pick("cache", "scratch", "last_text")
    gen, cgen = c.pick(("gen", "cache_gen"), ("epoch", "cache_epoch"), ("version", "cached_version"))
    csize = f"{d.p.upper()}_CACHE_SIZE"
    size = c.pick(128, 256, 512)
    release = [f"        free({x}->{cache});"]
    if not bad:
        release.append(f"        {x}->{cache} = NULL;")
    code = T(r"""
#define $csize $size

$doc
int $fn(struct $ctx_t *$x, const char *$src)
{
$trace
    if ($xnn && $x->$gen != $x->$cgen) {
$release
    }
    if ($xnull) {
        $x->$cache = malloc($csize);
$acheck
        $x->$cgen = $x->$gen;
    }
$pad
    strncpy($x->$cache, $src, $csize - 1);
    $x->$cache[$csize - 1] = '\0';
    return 0;
}
""", csize=csize, size=size, doc=c.doc(f"Keeps a copy of the latest {d.noun} text in the context."),
          fn=fn, ctx_t=ctx_t, x=x, src=src, trace=c.trace(fn),
          xnn=c.notnull(f"{x}->{cache}"), xnull=c.isnull(f"{x}->{cache}"), gen=gen, cgen=cgen,
          release=release, cache=cache,
          acheck=c.guard(c.isnull(f"{x}->{cache}"), ["return -1;"], 2), pad=c.pad(fn))
    if bad:
        reason = (f"函数 {fn} 在 {gen} 变化时 free({x}->{cache})，但没有把 {x}->{cache} 置为 NULL；"
                  f"下面的 {c.isnull(x + '->' + cache)} 判断因此不成立，不会重新分配，"
                  f"随后 strncpy 向已释放的 {x}->{cache} 写入数据，存在释放后使用。")
    else:
        reason = (f"函数 {fn} 释放 {x}->{cache} 后立即把它置为 NULL，下面的判断会重新 malloc 一块新内存，"
                  f"strncpy 写入的始终是有效的缓冲区，不存在释放后使用。")
    return c_includes(c, c.render(code)), reason


def uaf_error_path(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = f"{d.p}_{c.pick('apply_text', 'set_from_string', 'parse_into')}"
    text = c.var("text", "src", "input")
    tmp = c.var("tmp", "copy", "work")
    rc = c.var("rc", "ret", "status")
    if bad:
        branch = [f"        free({tmp});", f"        {rc} = -1;"]
        decl = [f"    int {rc} = 0;"]
        ret = f"    return {rc};"
    else:
        form = c.pick("return", "rc")
        if form == "return":
            branch = [f"        free({tmp});", "        return -1;"]
            decl = [f"    int {rc} = 0;"] if c.chance(0.5) else []
            ret = f"    return {rc};" if decl else "    return 0;"
        else:
            branch = [f"        free({tmp});", f"        {tmp} = NULL;", f"        {rc} = -1;"]
            decl = [f"    int {rc} = 0;"]
            ret = f"    return {rc};"
    tail = [f"    {d.v}->{d.buf}_len = strlen({tmp});", f"    free({tmp});"]
    if not bad and "= NULL;" in branch[1]:
        tail = [f"    if ({c.notnull(tmp)}) {{", f"        {d.v}->{d.buf}_len = strlen({tmp});",
                f"        free({tmp});", "    }"]
    code = T(r"""
$doc
int $fn(struct $st *$v, const char *$text)
{
    char *$tmp;
$decl

$trace
    $tmp = strdup($text);
$acheck
    if (sscanf($tmp, "%ld", &$v->$num) != 1) {
$branch
    }
$pad
$tail
$ret
}
""", doc=c.doc(f"Parses a numeric {d.num} from text and stores it in the {d.noun}."), fn=fn,
          st=d.st, v=d.v, text=text, tmp=tmp, decl=decl, trace=c.trace(fn),
          acheck=c.guard(c.isnull(tmp), ["return -1;"]), num=d.num, branch=branch,
          pad=c.pad(fn), tail=tail, ret=ret)
    if bad:
        reason = (f"函数 {fn} 在 sscanf 解析失败时 free({tmp}) 并设置 {rc} = -1，但没有返回，"
                  f"代码继续执行 strlen({tmp}) 并再次 free({tmp})，使用了已释放的内存（还会重复释放），存在释放后使用。")
    elif "= NULL;" in branch[1]:
        reason = (f"函数 {fn} 在解析失败时 free({tmp}) 后立即把 {tmp} 置为 NULL，"
                  f"后面的 strlen 和 free 都放在 {c.notnull(tmp)} 的判断里，不会访问已释放的内存，不存在释放后使用。")
    else:
        reason = (f"函数 {fn} 在 sscanf 失败时 free({tmp}) 后立即 return -1，"
                  f"只有解析成功时才会执行 strlen({tmp}) 和最后的 free({tmp})，不存在释放后使用。")
    return c_includes(c, c.render(code)), reason


TEMPLATES = (
    ("c", uaf_log_after_free),
    ("c", uaf_list_remove),
    ("c", uaf_stale_cache),
    ("c", uaf_error_path),
)
