"""Code templates for 资源未释放 (resource not released).

A FILE, file descriptor, Reader or JDBC object that one path never closes.

Every template takes (ctx, bad) and returns (code, reason); ``bad`` selects the
defective variant. ``TEMPLATES`` lists them with their language, in the order
the generator uses them round-robin.
"""
from __future__ import annotations

from .common import Ctx, T, c_includes, camel


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
    g = ["return -1;"] if bad else [f"close({fd});", "return -1;"]
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


TEMPLATES = (
    ("c", rl_c_fopen),
    ("c", rl_c_fd),
    ("java", rl_java_reader),
    ("java", rl_java_jdbc),
)
