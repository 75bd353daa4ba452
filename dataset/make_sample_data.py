#!/usr/bin/env python3
"""Generate synthetic raw training samples for the defect-judgement model.

Every sample follows the raw format of the design document::

    {
        "instruction": [{"subtype": "<缺陷类型>"}],
        "input": {"task": "...", "event": "<code>", "output_format": "..."},
        "output": {"judgement": "是" | "否", "reason": "..."}
    }

For each defect subtype there are several code templates (C and/or Java).
Each template can render a defective variant ("是") or a clean variant ("否");
the two differ only in the decisive detail (a missing NULL check, ``<=`` vs
``<``, a missing ``free``/``fclose`` on one path, ...).  Identifiers, domains,
indentation, brace style and harmless extra statements are randomised with a
fixed seed, so the output is fully deterministic.

Standard library only; Python 3.10+.  Run ``python dataset/make_sample_data.py
--help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from random import Random
from string import Template
from typing import Callable

# --------------------------------------------------------------------------
# Settings (each one can be overridden by the command-line flag of the same name)
# --------------------------------------------------------------------------
output_dir = "./dataset/output"  # relative to the repo root (works from any working directory)
samples_per_subtype = 40  # half "是", half "否" (an odd count gets one extra "是")
seed = 20240607

REPO_ROOT = Path(__file__).resolve().parents[1]

LONG_SAMPLE_RATE = 0.12  # share of samples that get extra, unrelated statements
MIN_CODE_LINES = 10
MAX_CODE_LINES = 60
MAX_ATTEMPTS = 50  # retries per sample when a rendered event is a duplicate or too long

# Words that must never appear in generated code or reasons (they would leak
# the label).  Checked case-insensitively as substrings, so e.g. "debug" and
# "prefix" are avoided too.
FORBIDDEN_WORDS = (
    "bug", "vuln", "bad", "fix", "unsafe", "safe", "leak", "overflow", "todo",
    "wrong", "broken", "correct", "missing", "dangl", "uaf", "cwe",
)

TASK_PHRASES = (
    "请判断下面的{lang}{unit}是否存在{subtype}缺陷。",
    "阅读以下{lang}{unit}，判断其中是否存在{subtype}问题。",
    "下面是一段{lang}{unit}，请分析它是否存在{subtype}缺陷。",
    "请审查下列{lang}{unit}，判断是否存在{subtype}。",
    "作为代码审查人员，请判断以下{lang}{unit}是否包含{subtype}缺陷。",
    "请检查这段{lang}{unit}，判断它是否存在{subtype}缺陷。",
)

OUTPUT_FORMATS = (
    "判断:是/否\n\n原因：<简要说明>",
    "判断:是/否\n\n原因：<简要说明判断依据>",
    "请严格按照以下格式输出：\n判断:是/否\n\n原因：<简要说明>",
)


# --------------------------------------------------------------------------
# Domains: vocabulary used to give each sample a different surface
# --------------------------------------------------------------------------
@dataclass(frozen=True)
class Domain:
    noun: str  # English noun for doc comments and log strings
    p: str  # C function-name stem
    st: str  # C struct name of one element
    v: str  # C variable holding one element
    tbl: str  # C struct name of the container
    tv: str  # C variable holding the container
    idf: str  # int id field
    cnt: str  # count / size field
    name: str  # fixed-size char array field
    num: str  # long numeric field
    buf: str  # heap pointer field
    items: str  # array field inside the container
    jcls: str  # Java class name
    jv: str  # Java variable name
    jpl: str  # Java plural (collections)
    vals: str  # name for a plain numeric array parameter
    path: str  # name for a file path parameter
    words: tuple[str, str, str]  # three keyword strings used by some templates


DOMAINS = (
    Domain("packet", "pkt", "packet", "pkt", "packet_queue", "queue", "seq", "length",
           "iface", "ttl", "payload", "slots", "Packet", "packet", "packets", "sizes",
           "capture_path", ("tcp", "udp", "icmp")),
    Domain("inventory item", "inv", "inventory_item", "item", "inventory", "inv", "sku_id",
           "quantity", "sku", "unit_price", "notes", "items", "InventoryItem", "item",
           "items", "quantities", "stock_file", ("each", "box", "pallet")),
    Domain("sensor reading", "sensor", "sensor_reading", "rd", "sensor_bank", "bank",
           "channel", "sample_count", "label", "millivolts", "raw", "readings",
           "SensorReading", "reading", "readings", "samples", "calib_path",
           ("thermal", "pressure", "humidity")),
    Domain("session", "sess", "session", "s", "session_table", "table", "sid", "hits",
           "user", "last_seen", "token", "sessions", "UserSession", "session", "sessions",
           "durations", "session_file", ("guest", "member", "admin")),
    Domain("config entry", "cfg", "config_entry", "entry", "config_table", "cfg",
           "line_no", "value_len", "key", "int_value", "value", "entries", "ConfigEntry",
           "entry", "entries", "weights", "config_path", ("trace", "info", "warn")),
    Domain("matrix row", "mat", "matrix_row", "row", "matrix", "m", "index", "cols", "tag",
           "scale", "raw_cells", "rows", "MatrixRow", "row", "rows", "cells",
           "matrix_file", ("dense", "sparse", "banded")),
    Domain("log record", "logidx", "log_record", "rec", "log_index", "idx", "record_id",
           "msg_len", "source", "timestamp", "message", "records", "LogRecord", "record",
           "records", "offsets", "log_path", ("info", "warn", "error")),
    Domain("order line", "order", "order_line", "ol", "order_book", "book", "order_id",
           "qty", "product", "price_cents", "memo", "lines", "OrderLine", "orderLine",
           "orderLines", "amounts", "orders_csv", ("new", "paid", "shipped")),
    Domain("image tile", "tile", "image_tile", "tile", "tile_cache", "cache", "tile_id",
           "width", "format", "height", "pixels", "tiles", "ImageTile", "tile", "tiles",
           "pixels", "atlas_path", ("png", "jpeg", "webp")),
    Domain("account", "acct", "account", "acc", "ledger", "ledger", "account_no",
           "tx_count", "owner", "balance", "history", "accounts", "Account", "account",
           "accounts", "deposits", "ledger_path", ("checking", "savings", "credit")),
    Domain("job", "job", "job_entry", "job", "job_queue", "q", "job_id", "retries",
           "command", "priority", "args", "jobs", "Job", "job", "jobs", "runtimes",
           "spool_path", ("low", "normal", "high")),
    Domain("route", "route", "route_entry", "rt", "route_table", "rtab", "route_id",
           "hop_count", "gateway", "metric", "hop_data", "routes", "RouteEntry", "route",
           "routes", "latencies", "routes_path", ("static", "dynamic", "local")),
    Domain("grade record", "grade", "grade_record", "gr", "grade_book", "gb",
           "student_id", "credits", "course", "score", "comments", "records",
           "GradeRecord", "grade", "grades", "scores", "grades_path", ("pass", "merit", "honors")),
    Domain("cache entry", "kv", "kv_entry", "ent", "kv_store", "store", "slot", "ttl_sec",
           "name", "version", "blob", "entries", "CacheEntry", "cacheEntry",
           "cacheEntries", "sizes", "snapshot_path", ("hot", "warm", "cold")),
)


def camel(snake: str) -> str:
    """``sample_count`` -> ``SampleCount``."""
    return "".join(part[:1].upper() + part[1:] for part in snake.split("_"))


# --------------------------------------------------------------------------
# Rendering helpers
# --------------------------------------------------------------------------
_DROP = "\x00"  # marks a placeholder line whose block turned out empty


def T(template: str, /, **kw: object) -> str:
    """Fill a ``$name`` template.  List values are code blocks (one line each);
    an empty block removes its placeholder line entirely."""
    values = {}
    for key, val in kw.items():
        if isinstance(val, list):
            values[key] = "\n".join(val) if val else _DROP
        else:
            values[key] = val
    filled = Template(template).substitute(values)
    return "\n".join(line for line in filled.split("\n") if line != _DROP)


class Ctx:
    """Per-sample random choices: domain, language, style, fresh names."""

    def __init__(self, rng: Random, domain: Domain, lang: str):
        self.r = rng
        self.d = domain
        self.lang = lang
        self.braces = rng.random() < 0.7  # braces around single-statement if bodies (C)
        self.null_eq = rng.random() < 0.7  # "p == NULL" instead of "!p" (C)
        self.long = rng.random() < LONG_SAMPLE_RATE
        if lang == "c":
            self.indent = rng.choice(("    ", "    ", "    ", "\t", "  "))
        else:
            self.indent = rng.choice(("    ", "    ", "    ", "  "))
        self.used = {domain.v, domain.tv, domain.jv, domain.jpl, domain.vals, domain.path}
        self._pads = 0

    # random helpers -------------------------------------------------------
    def pick(self, *options):
        return self.r.choice(options)

    def chance(self, p: float) -> bool:
        return self.r.random() < p

    def var(self, *candidates: str) -> str:
        """A variable name not used yet in this sample."""
        free = [c for c in candidates if c not in self.used]
        name = self.r.choice(free) if free else f"{candidates[0]}{len(self.used)}"
        self.used.add(name)
        return name

    # code helpers -----------------------------------------------------------
    def isnull(self, x: str) -> str:
        if self.lang == "java":
            return f"{x} == null"
        return f"{x} == NULL" if self.null_eq else f"!{x}"

    def notnull(self, x: str) -> str:
        if self.lang == "java":
            return f"{x} != null"
        return f"{x} != NULL" if self.null_eq else x

    def guard(self, cond: str, body: list[str], level: int = 1) -> list[str]:
        pad = "    " * level
        if self.lang == "c" and len(body) == 1 and not self.braces:
            return [f"{pad}if ({cond})", f"{pad}    {body[0]}"]
        return [f"{pad}if ({cond}) {{", *[f"{pad}    {b}" for b in body], f"{pad}}}"]

    def doc(self, text: str, p: float = 0.3) -> list[str]:
        """Optional neutral comment describing what the function does."""
        if not self.chance(p):
            return []
        if self.lang == "java":
            return ["/**", f" * {text}", " */"]
        if self.chance(0.5):
            return [f"/* {text} */"]
        return ["/*", f" * {text}", " */"]

    def trace(self, fn: str, level: int = 1, p: float = 0.2) -> list[str]:
        """Optional harmless logging line."""
        if not self.chance(p):
            return []
        pad = "    " * level
        if self.lang == "java":
            return [pad + self.pick(f'LOG.finest("{fn} start");',
                                    f'log.fine("enter {fn}");',
                                    f'logger.trace("{fn}");')]
        return [pad + self.pick(f'TRACE_ENTER("{fn}");',
                                f'{self.d.p}_log(LOG_TRACE, "%s", __func__);',
                                f'trace_point("{self.d.p}", __LINE__);')]

    def pad(self, fn: str, level: int = 1) -> list[str]:
        """Extra unrelated statements (1 to 3 blocks), only for the few "long" samples."""
        if not self.long or self._pads:
            return []
        self._pads = self.pick(1, 2, 2, 3)
        out: list[str] = []
        for k in self.r.sample(range(4 if self.lang == "java" else 3), self._pads):
            out += (self._pad_block(k, fn, level) + [""])
        return out[:-1]

    def _pad_block(self, k: int, fn: str, level: int) -> list[str]:
        ind = "    " * level
        p = self.d.p
        if self.lang == "java":
            blocks = [
                ["if (metrics != null) {",
                 f'    metrics.counter("{p}.{fn}.calls").increment();',
                 f'    metrics.gauge("{p}.{fn}.last", System.currentTimeMillis());',
                 "}"],
                ["synchronized (statsLock) {",
                 "    invocationCount++;",
                 "    lastInvocation = Instant.now();",
                 "}"],
                ["if (LOG.isLoggable(Level.FINE)) {",
                 f'    LOG.fine("{fn} invoked by " + Thread.currentThread().getName());',
                 "}"],
                ["if (listeners != null && !listeners.isEmpty()) {",
                 "    for (Runnable listener : listeners) {",
                 "        listener.run();",
                 "    }",
                 "}"],
            ]
            return [ind + line for line in blocks[k]]
        st = self.var("st", "stats", "counters")
        tag = self.var("tag", "label_buf", "audit_tag")
        tl = self.var("tag_len", "written", "nchars")
        blocks = [
            [f"if ({p}_stats_enabled()) {{",
             f"    struct {p}_stats *{st} = {p}_stats_get();",
             "",
             f"    {st}->calls++;",
             f"    {st}->last_call = time(NULL);",
             f"    if ({st}->calls % 1024 == 0) {{",
             f"        {p}_stats_flush({st});",
             "    }",
             "}"],
            [f"pthread_mutex_lock(&{p}_lock);",
             f"{p}_generation++;",
             f"{p}_last_op = OP_{fn.upper()};",
             f"pthread_mutex_unlock(&{p}_lock);"],
            ["{",
             f"    char {tag}[48];",
             f'    int {tl} = snprintf({tag}, sizeof({tag}), "{p}:%lu", (unsigned long)time(NULL));',
             "",
             f"    if ({tl} > 0 && (size_t){tl} < sizeof({tag})) {{",
             f"        {p}_audit({tag});",
             "    }",
             "}"],
        ]
        block = [ind + line if line else "" for line in blocks[k]]
        if k == 1 and self.chance(0.5):
            block = [f"#ifdef {p.upper()}_VERBOSE",
                     f'{ind}fprintf(stderr, "[{p}] %s\\n", __func__);',
                     "#endif"] + block
        return block

    def render(self, text: str) -> str:
        """Normalise blank lines and apply the sample's indentation unit."""
        lines = [line.rstrip() for line in text.strip("\n").split("\n")]
        out: list[str] = []
        for line in lines:
            if not line and (not out or not out[-1]):
                continue
            n = len(line) - len(line.lstrip(" "))
            out.append(self.indent * (n // 4) + " " * (n % 4) + line[n:])
        while out and not out[-1]:
            out.pop()
        return "\n".join(out)


def c_includes(ctx: Ctx, code: str) -> str:
    """Sometimes prepend the #include lines the code needs."""
    if not ctx.chance(0.2):
        return code
    headers = []
    if re.search(r"\b(FILE|fopen|fprintf|snprintf|fread)\b", code):
        headers.append("stdio.h")
    if re.search(r"\b(malloc|calloc|realloc|free|strtol|atoi|atol)\b", code):
        headers.append("stdlib.h")
    if re.search(r"\b(memcpy|memset|strlen|strchr|strcmp|strtok|strdup|strncpy)\b", code):
        headers.append("string.h")
    if re.search(r"\b(uint8_t|uint16_t|uint32_t|UINT32_MAX)\b", code):
        headers.append("stdint.h")
    if re.search(r"\b(INT_MAX|LONG_MIN)\b", code):
        headers.append("limits.h")
    if re.search(r"\b(errno|ERANGE)\b", code):
        headers.insert(0, "errno.h")
    if not headers:
        return code
    return "\n".join(f"#include <{h}>" for h in headers) + "\n\n" + code


def java_class(ctx: Ctx, fields: list[str], methods: str, p: float = 0.4) -> str:
    """Sometimes wrap Java methods in a class (with the fields they use)."""
    if not fields or not ctx.chance(p):
        return methods
    cls = ctx.d.jcls + ctx.pick("Service", "Repository", "Store", "Registry", "Handler")
    body = ["    " + f for f in fields] + [""]
    body += [("    " + line) if line else "" for line in methods.strip("\n").split("\n")]
    return "\n".join([f"public class {cls} {{", *body, "}"])


# Every template returns (code, reason).  ``bad`` selects the defective variant.
TemplateFn = Callable[[Ctx, bool], "tuple[str, str]"]


# ==========================================================================
# 空指针解引用 (null pointer dereference)
# ==========================================================================
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


# ==========================================================================
# 缓冲区溢出 (buffer overflow)
# ==========================================================================
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


# ==========================================================================
# 内存泄漏 (memory leak)
# ==========================================================================
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


# ==========================================================================
# 资源未释放 (resource not released)
# ==========================================================================
def rl_c_fopen(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = f"{d.p}_{c.pick('read_header', 'load_header', 'probe_file', 'open_check')}"
    hdr = f"{d.p}_header"
    path = d.path
    out = c.var("hdr", "out", "h")
    fp = c.var("fp", "f", "file", "in")
    magic = f"{d.p.upper()}_MAGIC"
    ver = f"{d.p.upper()}_VERSION"
    three = c.chance(0.5)
    style = c.pick("each", "goto")
    n_paths = 3 if three else 2
    miss = c.r.randrange(n_paths) if bad else -1
    conds = [f"fread({out}, sizeof(*{out}), 1, {fp}) != 1",
             f"{out}->magic != {magic}",
             f"{out}->version > {ver}"][:n_paths]
    body: list[str] = []
    if style == "each":
        for k, cond in enumerate(conds):
            stmts = [f"return -{k + 1};"] if k == miss else [f"fclose({fp});", f"return -{k + 1};"]
            body += c.guard(cond, stmts)
        tail = [f"    fclose({fp});", "    return 0;"]
        decl = []
    else:
        rc = c.var("rc", "ret", "status")
        for k, cond in enumerate(conds):
            stmts = ([f"return -{k + 1};"] if k == miss
                     else [f"{rc} = -{k + 1};", "goto out;"])
            body += c.guard(cond, stmts)
        tail = ["out:", f"    fclose({fp});", f"    return {rc};"]
        decl = [f"    int {rc} = 0;"]
    code = T(r"""
$doc
int $fn(const char *$path, struct $hdr *$out)
{
    FILE *$fp;
$decl

$trace
    $fp = fopen($path, "rb");
$ocheck
$body
$pad
$tail
}
""", doc=c.doc(f"Reads and validates the header of a {d.noun} file."), fn=fn, path=path,
          hdr=hdr, out=out, fp=fp, decl=decl, trace=c.trace(fn),
          ocheck=c.guard(c.isnull(fp), ["return -1;"]), body=body, pad=c.pad(fn), tail=tail)
    what = ["fread 读取失败", "magic 校验失败", "version 过高"]
    if bad:
        reason = (f"函数 {fn} 用 fopen 打开了 {fp}，但在 {what[miss]} 时直接 return -{miss + 1}，"
                  f"这条错误路径没有{'调用 fclose' if style == 'each' else '跳转到 out 执行 fclose'}，"
                  f"文件句柄 {fp} 不会被关闭，存在资源未释放。")
    else:
        paths = "、".join(what[:n_paths])
        via = "都先调用 fclose" if style == "each" else "都跳转到 out 标签统一 fclose"
        reason = (f"函数 {fn} 打开 {fp} 后，{paths}这些错误路径{via}，正常路径也会关闭 {fp}，"
                  f"fopen 失败时没有需要关闭的句柄，不存在资源未释放。")
    return c_includes(c, c.render(code)), reason


def rl_c_fd(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    form = c.pick("socket", "read")
    fd = c.var("fd", "sock", "s_fd")
    if form == "socket":
        fn = f"{d.p}_{c.pick('send_report', 'push_update', 'notify')}"
        host = c.var("host", "addr_str", "ip")
        port = c.var("port", "dst_port")
        msg = c.var("msg", "payload_str", "line")
        addr = c.var("addr", "sa", "peer")
        sent = c.var("sent", "n", "rc")
        miss = c.pick(0, 1) if bad else -1
        g1 = ["return -1;"] if miss == 0 else [f"close({fd});", "return -1;"]
        g2 = ["return -1;"] if miss == 1 else [f"close({fd});", "return -1;"]
        code = T(r"""
$doc
int $fn(const char *$host, int $port, const char *$msg)
{
    struct sockaddr_in $addr;
    ssize_t $sent;
    int $fd = socket(AF_INET, SOCK_STREAM, 0);

$trace
    if ($fd < 0) {
        return -1;
    }
    memset(&$addr, 0, sizeof($addr));
    $addr.sin_family = AF_INET;
    $addr.sin_port = htons((uint16_t)$port);
$g1
$g2
$pad
    $sent = send($fd, $msg, strlen($msg), 0);
    close($fd);
    return $sent < 0 ? -1 : 0;
}
""", doc=c.doc(f"Sends one {d.noun} update to a collector over TCP."), fn=fn, host=host,
                 port=port, msg=msg, addr=addr, sent=sent, fd=fd, trace=c.trace(fn),
                 g1=c.guard(f"inet_pton(AF_INET, {host}, &{addr}.sin_addr) != 1", g1),
                 g2=c.guard(f"connect({fd}, (struct sockaddr *)&{addr}, sizeof({addr})) < 0", g2),
                 pad=c.pad(fn))
        what = ["inet_pton 解析地址失败", "connect 连接失败"]
        if bad:
            reason = (f"函数 {fn} 创建了套接字 {fd}，但在 {what[miss]} 时直接 return -1，没有调用 close({fd})，"
                      f"文件描述符 {fd} 泄露，存在资源未释放。")
        else:
            reason = (f"函数 {fn} 在 socket 成功后，inet_pton 失败和 connect 失败两条错误路径都先 close({fd}) 再返回，"
                      f"正常发送后也调用了 close({fd})，不存在资源未释放。")
        return c_includes(c, c.render(code)), reason

    fn = f"{d.p}_{c.pick('read_file', 'slurp', 'load_text')}"
    buf = c.var("buf", "dst", "out")
    cap = c.var("cap", "size", "buf_size")
    n = c.var("n", "got", "nread")
    g = [f"return -1;"] if bad else [f"close({fd});", "return -1;"]
    code = T(r"""
$doc
int $fn(const char *$path, char *$buf, size_t $cap)
{
    ssize_t $n;
    int $fd;

$trace
    if ($cap == 0) {
        return -1;
    }
    $fd = open($path, O_RDONLY);
    if ($fd < 0) {
        return -1;
    }
    $n = read($fd, $buf, $cap - 1);
$g
$pad
    $buf[$n] = '\0';
    close($fd);
    return (int)$n;
}
""", doc=c.doc(f"Reads a small {d.noun} file into the caller's buffer."), fn=fn, path=d.path,
             buf=buf, cap=cap, n=n, fd=fd, trace=c.trace(fn), g=c.guard(f"{n} < 0", g),
             pad=c.pad(fn))
    if bad:
        reason = (f"函数 {fn} 用 open 得到 {fd}，当 read 返回负值时直接 return -1，没有调用 close({fd})，"
                  f"文件描述符泄露，存在资源未释放。")
    else:
        reason = (f"函数 {fn} 中 open 成功后，read 失败的路径先 close({fd}) 再返回，正常路径在返回前也 close({fd})，"
                  f"open 失败时没有需要关闭的描述符，不存在资源未释放。")
    return c_includes(c, c.render(code)), reason


def rl_java_reader(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = c.pick("count", "countValid", "tally") + camel(d.jpl)
    path = c.var("path", "fileName", "location")
    limit = c.var("limit", "maxLines", "cap")
    rd = c.var("reader", "in", "br")
    cnt = c.var("count", "n", "valid")
    ln = c.var("line", "row", "text")
    form = "twr" if not bad else c.pick("early", "never")
    if not bad and c.chance(0.35):
        form = "finally"
    loop = [f"    while (({ln} = {rd}.readLine()) != null) {{",
            f'        if ({ln}.isEmpty() || {ln}.startsWith("#")) {{',
            "            continue;", "        }",
            f"        {cnt}++;",
            f"        if ({cnt} > {limit}) {{", "            return -1;", "        }",
            "    }"]
    open_ = f"new BufferedReader(new FileReader({path}))"
    if form == "twr":
        body = [f"    int {cnt} = 0;",
                f"    try (BufferedReader {rd} = {open_}) {{",
                f"        String {ln};",
                *["    " + x for x in loop],
                "    }",
                f"    return {cnt};"]
    elif form == "finally":
        body = [f"    int {cnt} = 0;",
                f"    BufferedReader {rd} = {open_};",
                "    try {",
                f"        String {ln};",
                *["    " + x for x in loop],
                "    } finally {",
                f"        {rd}.close();",
                "    }",
                f"    return {cnt};"]
    else:
        body = [f"    BufferedReader {rd} = {open_};",
                f"    int {cnt} = 0;",
                f"    String {ln};",
                *loop]
        if form == "early":
            body.append(f"    {rd}.close();")
        body.append(f"    return {cnt};")
    code = T(r"""
$doc
public int $fn(String $path, int $limit) throws IOException {
$trace
$pad
$body
}
""", doc=c.doc(f"Counts non-comment lines of a {d.noun} file, or -1 if there are too many."),
          fn=fn, path=path, limit=limit, trace=c.trace(fn), pad=c.pad(fn), body=body)
    if form == "early":
        reason = (f"方法 {fn} 只在循环正常结束后调用 {rd}.close()；当 {cnt} > {limit} 时循环内直接 return -1，"
                  f"readLine() 抛出 IOException 时也会跳过 close，{rd} 持有的文件句柄不会被关闭，存在资源未释放。")
    elif form == "never":
        reason = (f"方法 {fn} 创建了 BufferedReader {rd}（底层是 FileReader），但所有返回路径都没有调用 {rd}.close()，"
                  f"也没有使用 try-with-resources，文件句柄不会被释放，存在资源未释放。")
    elif form == "twr":
        reason = (f"方法 {fn} 用 try-with-resources 声明 {rd}，无论循环正常结束、在 {cnt} > {limit} 时提前 return，"
                  f"还是 readLine() 抛出异常，{rd} 都会被自动关闭，不存在资源未释放。")
    else:
        reason = (f"方法 {fn} 在 try 块中读取文件，并在 finally 中调用 {rd}.close()，"
                  f"提前 return -1 或抛出异常时 finally 同样会执行，不存在资源未释放。")
    return c.render(code), reason


def rl_java_jdbc(c: Ctx, bad: bool) -> tuple[str, str]:
    d = c.d
    fn = c.pick("find", "load", "query", "fetch") + camel(d.jpl) + c.pick("Above", "AtLeast", "From")
    ds = c.var("dataSource", "ds", "pool")
    mn = c.var("min", "threshold", "lower")
    res = c.var("result", "out", "found")
    conn = c.var("conn", "connection", "db")
    ps = c.var("ps", "stmt", "query")
    rs = c.var("rs", "rows", "cursor")
    table = d.jpl.lower()
    col = d.num
    sql = f"SELECT {d.idf}, {d.name}, {col} FROM {table} WHERE {col} >= ?"
    form = "twr" if not bad else c.pick("none", "conn_open")
    fill = [f"    {d.jcls} {d.jv} = new {d.jcls}();",
            f'    {d.jv}.set{camel(d.idf)}({rs}.getInt("{d.idf}"));',
            f'    {d.jv}.set{camel(d.name)}({rs}.getString("{d.name}"));',
            f'    {d.jv}.set{camel(d.num)}({rs}.getLong("{col}"));',
            f"    {res}.add({d.jv});"]
    if form == "twr":
        body = [f"    List<{d.jcls}> {res} = new ArrayList<>();",
                f"    try (Connection {conn} = {ds}.getConnection();",
                f'         PreparedStatement {ps} = {conn}.prepareStatement("{sql}")) {{',
                f"        {ps}.setInt(1, {mn});",
                f"        try (ResultSet {rs} = {ps}.executeQuery()) {{",
                f"            while ({rs}.next()) {{",
                *["            " + x for x in fill],
                "            }", "        }", "    }",
                f"    return {res};"]
    else:
        inner = [f"        {ps}.setInt(1, {mn});",
                 f"        ResultSet {rs} = {ps}.executeQuery();",
                 f"        while ({rs}.next()) {{",
                 *["        " + x for x in fill],
                 "        }"]
        if form == "none":
            body = [f"    List<{d.jcls}> {res} = new ArrayList<>();",
                    f"    Connection {conn} = {ds}.getConnection();",
                    f'    PreparedStatement {ps} = {conn}.prepareStatement("{sql}");',
                    *[x[4:] for x in inner],
                    f"    return {res};"]
        else:
            body = [f"    List<{d.jcls}> {res} = new ArrayList<>();",
                    f"    Connection {conn} = {ds}.getConnection();",
                    f'    try (PreparedStatement {ps} = {conn}.prepareStatement("{sql}")) {{',
                    *inner, "    }",
                    f"    return {res};"]
    code = T(r"""
$doc
public List<$cls> $fn(DataSource $ds, int $mn) throws SQLException {
$trace
$pad
$body
}
""", doc=c.doc(f"Loads every {d.noun} whose {d.num} is at least the given value."),
          cls=d.jcls, fn=fn, ds=ds, mn=mn, trace=c.trace(fn), pad=c.pad(fn), body=body)
    if form == "none":
        reason = (f"方法 {fn} 通过 {ds}.getConnection() 获得 {conn}，又创建了 {ps} 和 {rs}，"
                  f"但三者都没有 close，也没有使用 try-with-resources，每次调用都会占用一个数据库连接不归还，存在资源未释放。")
    elif form == "conn_open":
        reason = (f"方法 {fn} 只把 PreparedStatement {ps} 放进了 try-with-resources，"
                  f"从 {ds}.getConnection() 得到的 {conn} 既不在 try 资源列表里也没有手动 close，"
                  f"连接不会归还给连接池，存在资源未释放。")
    else:
        reason = (f"方法 {fn} 用 try-with-resources 管理 {conn}、{ps} 和 {rs}，"
                  f"正常返回或抛出 SQLException 时三者都会按相反顺序自动关闭，不存在资源未释放。")
    return c.render(code), reason


# ==========================================================================
# 整数溢出 (integer overflow)
# ==========================================================================
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


# ==========================================================================
# 除零 (division by zero)
# ==========================================================================
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


# ==========================================================================
# 释放后使用 (use after free)
# ==========================================================================
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


# ==========================================================================
# 未初始化变量 (uninitialised variable)
# ==========================================================================
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
        f"    case 0:", f"        {factor} = {fs[0]};", "        break;",
        f"    case 1:", f"        {factor} = {fs[1]};", "        break;",
        f"    case 2:", f"        {factor} = {fs[2]};", "        break;",
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


# ==========================================================================
# Subtype registry
# ==========================================================================
@dataclass(frozen=True)
class Subtype:
    key: str  # file name stem
    name: str  # Chinese subtype name written into the samples
    layout: str  # "list" (one JSON list), "jsonl", or "per_file" (a folder of objects)
    templates: tuple[tuple[str, TemplateFn], ...]  # (language, template function)


SUBTYPES = (
    Subtype("null_pointer_dereference", "空指针解引用", "list", (
        ("c", np_c_malloc), ("c", np_c_lookup), ("c", np_c_strchr),
        ("java", np_java_map), ("java", np_java_helper), ("java", np_java_readline))),
    Subtype("buffer_overflow", "缓冲区溢出", "list", (
        ("c", bo_loop_bound), ("c", bo_copy_field), ("c", bo_histogram), ("c", bo_packet_parse))),
    Subtype("memory_leak", "内存泄漏", "list", (
        ("c", ml_early_return), ("c", ml_realloc), ("c", ml_partial_init), ("c", ml_loop_strdup))),
    Subtype("resource_leak", "资源未释放", "jsonl", (
        ("c", rl_c_fopen), ("c", rl_c_fd), ("java", rl_java_reader), ("java", rl_java_jdbc))),
    Subtype("integer_overflow", "整数溢出", "per_file", (
        ("c", io_c_alloc), ("c", io_c_offset), ("c", io_c_scale),
        ("java", io_java_sum), ("java", io_java_array))),
    Subtype("division_by_zero", "除零", "list", (
        ("c", dz_c_average), ("c", dz_c_range), ("c", dz_c_bucket),
        ("java", dz_java_rate), ("java", dz_java_percent))),
    Subtype("use_after_free", "释放后使用", "list", (
        ("c", uaf_log_after_free), ("c", uaf_list_remove), ("c", uaf_stale_cache),
        ("c", uaf_error_path))),
    Subtype("uninitialized_variable", "未初始化变量", "list", (
        ("c", uv_if_chain), ("c", uv_switch), ("c", uv_search_index), ("c", uv_accumulator))),
)


# ==========================================================================
# Sample assembly
# ==========================================================================
_FORBIDDEN_RE = re.compile("|".join(FORBIDDEN_WORDS), re.IGNORECASE)


class SampleRejected(Exception):
    """A rendered sample is out of the line range; the caller draws another."""


def check_text(text: str, where: str) -> None:
    hit = _FORBIDDEN_RE.search(text)
    if hit:
        raise ValueError(f"{where}: label-leaking word {hit.group(0)!r} in:\n{text}")


def make_sample(rng: Random, subtype: Subtype, template_index: int, bad: bool) -> dict:
    lang, template = subtype.templates[template_index]
    ctx = Ctx(rng, rng.choice(DOMAINS), lang)
    event, reason = template(ctx, bad)
    where = f"{subtype.key}/{template.__name__}"
    check_text(event, where)
    check_text(reason, where)
    n_lines = event.count("\n") + 1
    if not MIN_CODE_LINES <= n_lines <= MAX_CODE_LINES:
        raise SampleRejected(f"{where}: {n_lines} code lines (allowed "
                         f"{MIN_CODE_LINES}..{MAX_CODE_LINES}):\n{event}")
    several = "class " in event or event.count("\n}") > 1  # helper + function, struct, ...
    if lang == "c":
        unit = "代码" if several else rng.choice(("函数", "函数", "代码"))
    else:
        unit = "代码" if several else rng.choice(("方法", "方法", "代码"))
    task = rng.choice(TASK_PHRASES).format(lang="C" if lang == "c" else "Java",
                                           unit=unit, subtype=subtype.name)
    return {
        "instruction": [{"subtype": subtype.name}],
        "input": {"task": task, "event": event, "output_format": rng.choice(OUTPUT_FORMATS)},
        "output": {"judgement": "是" if bad else "否", "reason": reason},
    }


def generate_subtype(subtype: Subtype, count: int, base_seed: int) -> list[dict]:
    """``count`` samples as twin pairs, shuffled.

    A pair renders one template's defective ("是") and clean ("否") variant from
    the same random draws (domain, names, layout), so the twins differ where
    the defect is and little else, and share a ``pair_id``, as a vulnerable
    function and its fix do in PrimeVul-style data. Templates are used
    round-robin. An odd count adds one unpaired "是" sample.
    """
    rng = Random(f"{base_seed}:{subtype.key}")
    n_pairs, single = divmod(count, 2)
    n_templates = len(subtype.templates)
    templates = [k % n_templates for k in range(n_pairs + single)]
    rng.shuffle(templates)
    samples, seen = [], set()
    for k, template_index in enumerate(templates):
        labels = (True, False) if k < n_pairs else (True,)
        for attempt in range(MAX_ATTEMPTS):
            draws = f"{base_seed}:{subtype.key}:{k}:{attempt}"  # the twins' shared random draws
            try:
                variants = [make_sample(Random(draws), subtype, template_index, bad) for bad in labels]
            except SampleRejected:
                continue
            events = [v["input"]["event"] for v in variants]
            if len(set(events)) == len(events) and not seen.intersection(events):
                break
        else:
            raise RuntimeError(f"{subtype.key}: could not produce a unique, valid event")
        for variant in variants:
            seen.add(variant["input"]["event"])
            if len(variants) == 2:
                variant["pair_id"] = f"{subtype.key}-{k + 1:04d}"
            samples.append(variant)
    rng.shuffle(samples)
    return samples


# ==========================================================================
# Output
# ==========================================================================
def dumps_json(obj: object) -> str:
    return json.dumps(obj, ensure_ascii=False, indent=2) + "\n"


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as fh:
            fh.write(text)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def owned_files(out_dir: Path) -> list[Path]:
    """Files in ``out_dir`` that this script writes (and may therefore delete):
    ``<subtype>.json``, ``<subtype>.jsonl`` and ``<subtype>/NNNN.json`` for the
    known subtype keys.  Nothing else is ever touched."""
    found = []
    for st in SUBTYPES:
        for suffix in (".json", ".jsonl"):
            p = out_dir / f"{st.key}{suffix}"
            if p.is_file():
                found.append(p)
        folder = out_dir / st.key
        if folder.is_dir():
            found += [p for p in folder.iterdir()
                      if p.is_file() and re.fullmatch(r"\d{4,}\.json", p.name)]
    return found


def write_subtype(out_dir: Path, subtype: Subtype, samples: list[dict]) -> list[Path]:
    if subtype.layout == "list":
        path = out_dir / f"{subtype.key}.json"
        write_atomic(path, dumps_json(samples))
        return [path]
    if subtype.layout == "jsonl":
        path = out_dir / f"{subtype.key}.jsonl"
        write_atomic(path, "".join(json.dumps(s, ensure_ascii=False) + "\n" for s in samples))
        return [path]
    paths = []
    for k, sample in enumerate(samples, start=1):
        path = out_dir / subtype.key / f"{k:04d}.json"
        write_atomic(path, dumps_json(sample))
        paths.append(path)
    return paths


def print_summary(all_samples: dict[str, list[dict]], out_dir: Path, n_files: int) -> None:
    print(f"wrote {n_files} files to {out_dir}")
    print(f"{'subtype':<26}{'是':>5}{'否':>5}{'total':>7}")
    lines_all = []
    for st in SUBTYPES:
        samples = all_samples[st.key]
        yes = sum(s["output"]["judgement"] == "是" for s in samples)
        print(f"{st.key:<26}{yes:>5}{len(samples) - yes:>5}{len(samples):>7}  {st.name}")
        lines_all += [s["input"]["event"].count("\n") + 1 for s in samples]
    total = sum(len(v) for v in all_samples.values())
    print(f"{'all':<26}{'':>10}{total:>7}")
    if lines_all:
        print(f"code lines: min {min(lines_all)}, median {statistics.median(lines_all):g}, "
              f"max {max(lines_all)}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description="Generate synthetic raw defect-judgement samples (deterministic).")
    parser.add_argument("--output_dir", default=None,
                        help=f"output folder (default: {output_dir}, relative to the repo root; "
                             "a relative path given here is relative to the current directory)")
    parser.add_argument("--samples_per_subtype", type=int, default=samples_per_subtype,
                        help="samples per defect subtype, half 是 / half 否 (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=seed,
                        help="random seed; the same seed gives byte-identical output "
                             "(default: %(default)s)")
    args = parser.parse_args(argv)
    if args.samples_per_subtype < 1:
        parser.error("--samples_per_subtype must be at least 1")

    out_dir = (REPO_ROOT / output_dir).resolve() if args.output_dir is None \
        else Path(args.output_dir).resolve()
    all_samples = {st.key: generate_subtype(st, args.samples_per_subtype, args.seed)
                   for st in SUBTYPES}

    out_dir.mkdir(parents=True, exist_ok=True)
    stale_before = set(owned_files(out_dir))
    written: set[Path] = set()
    for st in SUBTYPES:
        written.update(write_subtype(out_dir, st, all_samples[st.key]))
    for path in sorted(stale_before - written):
        path.unlink()
    for st in SUBTYPES:  # drop per-file folders left empty by a layout change
        folder = out_dir / st.key
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()

    print_summary(all_samples, out_dir, len(written))
    return 0


if __name__ == "__main__":
    sys.exit(main())
