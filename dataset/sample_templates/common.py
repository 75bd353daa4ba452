"""Shared pieces of the code templates: the domains that give each sample its
vocabulary, the ``$name`` template filler ``T``, the per-sample random context
``Ctx`` (style, fresh names, optional comments and padding) and the wrappers
``c_includes`` / ``java_class``.

Every template is a function ``(ctx, bad) -> (code, reason)``; ``bad`` selects
the defective variant.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from random import Random
from string import Template
from typing import Callable

LONG_SAMPLE_RATE = 0.12  # share of samples that get extra, unrelated statements


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
