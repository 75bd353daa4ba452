"""Code templates for 空指针解引用 (null pointer dereference).

A pointer that may be NULL (allocation, lookup, strchr, Map.get, readLine) is used
before, or without, a check.

Every template takes (ctx, bad) and returns (code, reason); ``bad`` selects the
defective variant. ``TEMPLATES`` lists them with their language, in the order
the generator uses them round-robin.
"""
from __future__ import annotations

from .common import Ctx, T, c_includes, camel, java_class


def np_c_malloc(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = f"{d.p}_{c.pick('create', 'new', 'alloc_copy', 'make')}"
    data = c.var("data", "src", "bytes", "raw_in")
    n = c.var("len", "n", "size", "nbytes")
    i = c.var("i", "k", "pos")
    sumf = c.pick("checksum", "crc", "digest")
    late = bad and c.chance(0.35)  # check exists but comes after the first use
    check = c.guard(c.isnull(d.v), ["return NULL;"])
    if c.chance(0.5):
        loop = [f"    for (size_t {i} = 0; {i} < {n}; {i}++) {{",
                f"        {d.v}->{sumf} += {data}[{i}];",
                "    }"]
    else:
        loop = [f"    size_t {i} = 0;",
                f"    while ({i} < {n}) {{",
                f"        {d.v}->{sumf} = ({d.v}->{sumf} << 1) ^ {data}[{i}];",
                f"        {i}++;",
                "    }"]
    code = T(r"""
$doc
struct $st *$fn(const unsigned char *$data, size_t $n)
{
    struct $st *$v = malloc(sizeof(*$v));

$trace
$early
    $v->${buf}_len = $n;
$late
    $v->$buf = malloc($n);
$bufcheck
    memcpy($v->$buf, $data, $n);
    $v->$sumf = 0;
$loop
$pad
    return $v;
}
""", doc=c.doc(f"Creates a {d.noun} holding a copy of the given bytes."), st=d.st, fn=fn,
          data=data, n=n, v=d.v, trace=c.trace(fn), early=[] if bad else check,
          cnt=d.cnt, late=check if late else [], buf=d.buf,
          bufcheck=c.guard(c.isnull(f"{d.v}->{d.buf}"), [f"free({d.v});", "return NULL;"]),
          sumf=sumf, loop=loop, pad=c.pad(fn))
    if late:
        reason = (f"函数 {fn} 在 malloc 之后先执行了 {d.v}->{d.buf}_len = {n}，之后才检查 {d.v} 是否为 NULL；"
                  f"当 malloc 失败返回 NULL 时，这次写入已经解引用了空指针，检查的位置太晚，存在空指针解引用。")
    elif bad:
        reason = (f"函数 {fn} 调用 malloc 为 {d.v} 分配内存后没有检查返回值是否为 NULL，"
                  f"随后直接写入 {d.v}->{d.buf}_len 和 {d.v}->{d.buf}；分配失败时会解引用空指针。"
                  f"代码只检查了 {d.v}->{d.buf} 的分配结果，没有检查 {d.v} 本身。")
    else:
        reason = (f"函数 {fn} 在 malloc 之后立即检查 {d.v} 是否为 NULL 并在失败时返回 NULL，"
                  f"对 {d.v}->{d.buf} 的第二次分配同样做了检查（失败时释放 {d.v} 后返回），"
                  f"所有对 {d.v} 的解引用都发生在检查之后，不存在空指针解引用。")
    return c_includes(c, c.render(code)), reason


def np_c_lookup(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    find = f"{d.p}_{c.pick('find', 'lookup', 'get_by_id', 'locate')}"
    fn = f"{d.p}_{c.pick('touch', 'update', 'set_value', 'record')}"
    key = c.var("id", "key", "wanted")
    val = c.var("value", "val", "now", "amount")
    i = c.var("i", "j", "n")
    used = c.pick("count", "used", "nr", "len")
    err = c.pick("-1", "-ENOENT", "-2")
    tv_guard = c.chance(0.5)
    body_extra = [f"    {d.v}->{d.cnt}++;"] if c.chance(0.6) else []
    code = T(r"""
static struct $st *$find(struct $tbl *$tv, int $key)
{
    for (size_t $i = 0; $i < $tv->$used; $i++) {
        if ($tv->$items[$i].$idf == $key) {
            return &$tv->$items[$i];
        }
    }
    return NULL;
}

$doc
int $fn(struct $tbl *$tv, int $key, long $val)
{
    struct $st *$v;

$trace
$tvguard
    $v = $find($tv, $key);
$check
    $v->$num = $val;
$extra
$pad
    return 0;
}
""", st=d.st, find=find, tbl=d.tbl, tv=d.tv, key=key, i=i, used=used, items=d.items,
          idf=d.idf, doc=c.doc(f"Stores a new value in the {d.noun} with the given id."),
          fn=fn, val=val, v=d.v, trace=c.trace(fn),
          tvguard=c.guard(c.isnull(d.tv), [f"return {err};"]) if tv_guard else [],
          check=[] if bad else c.guard(c.isnull(d.v), [f"return {err};"]),
          num=d.num, extra=body_extra, pad=c.pad(fn))
    if bad:
        reason = (f"{find} 在表中找不到 {d.idf} 等于 {key} 的元素时返回 NULL，"
                  f"但 {fn} 没有检查返回值 {d.v} 是否为 NULL 就执行 {d.v}->{d.num} = {val}，"
                  f"传入不存在的 {key} 时会发生空指针解引用。")
        if tv_guard:
            reason += f"函数开头只检查了 {d.tv}，并没有检查查找结果 {d.v}。"
    else:
        reason = (f"{find} 在未找到时返回 NULL，{fn} 在使用前检查了 {d.v} 是否为 NULL 并返回 {err}，"
                  f"之后对 {d.v}->{d.num} 的写入只会在查找成功时执行，不存在空指针解引用。")
    return c_includes(c, c.render(code)), reason


def np_c_strchr(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = f"{d.p}_{c.pick('parse_line', 'parse_pair', 'read_field', 'split_entry')}"
    line = c.var("line", "text", "str", "input")
    out = c.var("out", "dst", "result")
    sep = c.var("sep", "eq", "delim_pos", "mark")
    klen = c.var("klen", "name_len", "len")
    ch = c.pick("=", ":", ",")
    empty_key = c.chance(0.45)
    if bad:
        cond = f"{sep} == {line}" if empty_key else None
    else:
        cond = f"{c.isnull(sep)} || {sep} == {line}" if empty_key else c.isnull(sep)
    code = T(r"""
$doc
int $fn(char *$line, struct $st *$out)
{
    char *$sep;
    size_t $klen;

$pguard
$trace
    $sep = strchr($line, '$ch');
$check
    *$sep = '\0';
    $klen = strlen($line);
    if ($klen >= sizeof($out->$name)) {
        return -1;
    }
    memcpy($out->$name, $line, $klen + 1);
    $out->$num = strtol($sep + 1, NULL, 10);
$pad
    return 0;
}
""", doc=c.doc(f"Parses one 'name{ch}number' line into a {d.noun}."), fn=fn, line=line,
          st=d.st, out=out, sep=sep, klen=klen,
          pguard=c.guard(f"{c.isnull(line)} || {c.isnull(out)}", ["return -1;"]),
          trace=c.trace(fn), ch=ch, check=c.guard(cond, ["return -1;"]) if cond else [],
          name=d.name, num=d.num, pad=c.pad(fn))
    if bad:
        reason = (f"strchr 在 {line} 中找不到 '{ch}' 时返回 NULL，函数 {fn} 没有检查 {sep} 是否为 NULL "
                  f"就执行 *{sep} = '\\0' 并读取 {sep} + 1，输入行不含分隔符时会解引用空指针。")
        if empty_key:
            reason += f"代码只判断了 {sep} == {line}（空名字）的情况，这个判断不能排除 NULL。"
        reason += f"开头对 {line} 和 {out} 的检查与 {sep} 无关。"
    else:
        reason = (f"函数 {fn} 在 strchr 之后检查了 {sep} 是否为 NULL，找不到 '{ch}' 时直接返回 -1，"
                  f"因此 *{sep} = '\\0' 和 strtol({sep} + 1, ...) 只在 {sep} 有效时执行，"
                  f"{line} 和 {out} 也在开头检查过，不存在空指针解引用。")
    return c_includes(c, c.render(code)), reason


def np_java_map(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = c.pick("reserve", "allocate", "withdraw", "consume") + c.pick("", "Units", "Amount")
    mp = c.var(f"{d.jpl}ByKey", f"{d.jpl}ByName", "registry", "index")
    audit = c.var("auditLog", "history", "journal")
    key = c.var("key", "name", "code", "id")
    amt = c.var("amount", "units", "delta")
    left = c.var("remaining", "available", "left")
    get, set_ = "get" + camel(d.cnt), "set" + camel(d.cnt)
    key_guard = c.chance(0.5)
    code = T(r"""
$doc
public int $fn(String $key, int $amt) {
$kguard
$trace
    $cls $jv = $mp.get($key);
$check
    int $left = $jv.$get() - $amt;
    if ($left < 0) {
        return -1;
    }
    $jv.$set($left);
    $audit.add($key + ":" + $amt);
$pad
    return $left;
}
""", doc=c.doc(f"Takes the given amount from the {d.noun} stored under the key."), fn=fn,
          key=key, amt=amt,
          kguard=c.guard(f"{key} == null", [f'throw new IllegalArgumentException("{key}");'])
          if key_guard else [],
          trace=c.trace(fn), cls=d.jcls, jv=d.jv, mp=mp,
          check=[] if bad else c.guard(f"{d.jv} == null", ["return -1;"]),
          left=left, get=get, set=set_, audit=audit, pad=c.pad(fn))
    code = java_class(c, [f"private final Map<String, {d.jcls}> {mp} = new HashMap<>();",
                          f"private final List<String> {audit} = new ArrayList<>();"], code)
    if bad:
        reason = (f"Map.get 在 {mp} 中没有键 {key} 时返回 null，方法 {fn} 没有检查 {d.jv} 是否为 null "
                  f"就调用 {d.jv}.{get}()，键不存在时会抛出 NullPointerException，存在空指针解引用。")
        if key_guard:
            reason += f"方法开头只检查了参数 {key}，没有检查查找结果。"
    else:
        reason = (f"方法 {fn} 从 {mp} 取出 {d.jv} 后先判断 {d.jv} == null 并返回 -1，"
                  f"之后才调用 {d.jv}.{get}() 和 {d.jv}.{set_}()，键不存在的情况已被处理，不存在空指针解引用。")
    return c.render(code), reason


def np_java_helper(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    find = c.pick("find", "lookup", "search") + d.jcls
    fn = c.pick("describe", "displayName", "labelFor", "summary") + c.pick("", "Of")
    lst = c.var(d.jpl, "all" + camel(d.jpl), "known")
    x = c.var("candidate", "each", "it", "e")
    name = c.var("name", "wanted", "target")
    get_name, get_id = "get" + camel(d.name), "get" + camel(d.idf)
    form = c.pick("if", "ternary")
    if bad:
        body = [f'    return {d.jv}.{get_name}() + "#" + {d.jv}.{get_id}();']
    elif form == "if":
        body = [f"    if ({d.jv} == null) {{", '        return "unknown";', "    }",
                f'    return {d.jv}.{get_name}() + "#" + {d.jv}.{get_id}();']
    else:
        body = [f"    return {d.jv} == null",
                '            ? "unknown"',
                f'            : {d.jv}.{get_name}() + "#" + {d.jv}.{get_id}();']
    code = T(r"""
private $cls $find(String $name) {
    for ($cls $x : $lst) {
        if ($name.equals($x.$get_name())) {
            return $x;
        }
    }
    return null;
}

$doc
public String $fn(String $name) {
$trace
    $cls $jv = $find($name);
$pad
$body
}
""", cls=d.jcls, find=find, name=name, x=x, lst=lst, get_name=get_name,
          doc=c.doc(f"Builds a short display string for a {d.noun}."), fn=fn,
          trace=c.trace(fn), jv=d.jv, pad=c.pad(fn), body=body)
    code = java_class(c, [f"private final List<{d.jcls}> {lst} = new ArrayList<>();"], code)
    if bad:
        reason = (f"{find} 在 {lst} 中找不到名字为 {name} 的元素时返回 null，方法 {fn} 没有判断 {d.jv} "
                  f"是否为 null 就调用 {d.jv}.{get_name}()，名字不存在时会抛出 NullPointerException，存在空指针解引用。")
    else:
        reason = (f"{find} 可能返回 null，但方法 {fn} 在调用 {d.jv}.{get_name}() 之前判断了 {d.jv} == null，"
                  f"为空时返回 \"unknown\"，不会解引用空引用，不存在空指针解引用。")
    return c.render(code), reason


def np_java_readline(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = c.pick("read", "parse", "next", "load") + d.jcls
    rd = c.var("reader", "in", "src")
    hdr = c.var("line", "header", "row")
    parts = c.var("parts", "fields", "cols")
    sep = c.pick(",", ";", "\\\\|")
    shown = sep.replace("\\\\", "\\")
    clean_form = c.pick("null", "eof")
    if bad:
        check = []
    elif clean_form == "null":
        check = c.guard(f"{hdr} == null", ["return null;"])
    else:
        check = c.guard(f"{hdr} == null", [f'throw new EOFException("no more {d.noun} rows");'])
    code = T(r"""
$doc
public $cls $fn(BufferedReader $rd) throws IOException {
    String $hdr = $rd.readLine();
$check
    String[] $parts = $hdr.trim().split("$sep");
    if ($parts.length < 3) {
        throw new IOException("expected 3 fields, got " + $parts.length);
    }
$pad
    $cls $jv = new $cls();
    $jv.$set_id(Integer.parseInt($parts[0]));
    $jv.$set_name($parts[1]);
    $jv.$set_cnt(Integer.parseInt($parts[2]));
    return $jv;
}
""", doc=c.doc(f"Reads the next {d.noun} from a delimited text stream."), cls=d.jcls,
          fn=fn, rd=rd, hdr=hdr, check=check, parts=parts, sep=sep, pad=c.pad(fn), jv=d.jv,
          set_id="set" + camel(d.idf), set_name="set" + camel(d.name),
          set_cnt="set" + camel(d.cnt))
    if bad:
        reason = (f"BufferedReader.readLine() 在流结束时返回 null，方法 {fn} 没有检查 {hdr} 是否为 null "
                  f"就调用 {hdr}.trim().split(\"{shown}\")，读到文件末尾时会抛出 NullPointerException，存在空指针解引用。")
    else:
        action = "返回 null" if clean_form == "null" else "抛出 EOFException"
        reason = (f"方法 {fn} 在 readLine() 之后先判断 {hdr} == null 并{action}，"
                  f"只有读到有效行时才调用 {hdr}.trim()，流结束的情况已被处理，不存在空指针解引用。")
    return c.render(code), reason


TEMPLATES = (
    ("c", np_c_malloc),
    ("c", np_c_lookup),
    ("c", np_c_strchr),
    ("java", np_java_map),
    ("java", np_java_helper),
    ("java", np_java_readline),
)
