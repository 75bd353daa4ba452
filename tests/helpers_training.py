"""Small, realistic chat-JSONL files for the training tests (the schema of
``dataset/convert_and_split.py``), built through the shared templates."""
from __future__ import annotations

import json
from pathlib import Path

from defect_judge.schema import RawSample, raw_to_record

TASK = "请判断下面静态分析工具报告的缺陷是否为真实缺陷。"
OUTPUT_FORMAT = "判断:是/否\n\n原因：简要说明理由"

# (subtype, event, judgement, reason): short C snippets as a static analyser reports them.
SAMPLES = [
    ("空指针解引用",
     "文件 src/net/conn.c 第 42 行：指针 conn 在 malloc 失败后未检查即被解引用。\n"
     "struct conn *conn = malloc(sizeof(*conn));\nconn->fd = fd;",
     "是", "malloc 可能返回 NULL，随后直接访问 conn->fd 会导致空指针解引用。"),
    ("空指针解引用",
     "文件 src/util/str.c 第 17 行：参数 s 可能为空。\n"
     "if (s == NULL) return 0;\nreturn strlen(s);",
     "否", "在调用 strlen 之前已经检查了 s 是否为 NULL，报告为误报。"),
    ("内存泄漏",
     "文件 src/io/reader.c 第 88 行：buf 在错误分支中未释放。\n"
     "char *buf = malloc(n);\nif (read(fd, buf, n) < 0) return -1;\nfree(buf);",
     "是", "read 失败时函数直接返回，buf 没有被释放，造成内存泄漏。"),
    ("内存泄漏",
     "文件 src/core/cache.c 第 30 行：entry 分配后未释放。\n"
     "struct entry *e = calloc(1, sizeof(*e));\nlist_add(&cache->list, e);",
     "否", "entry 被加入缓存链表，由 cache_destroy 统一释放，不是泄漏。"),
    ("数组越界",
     "文件 src/parse/token.c 第 55 行：下标 i 可能等于数组长度。\n"
     "char name[16];\nfor (int i = 0; i <= 16; i++) name[i] = src[i];",
     "是", "循环条件为 i <= 16，最后一次写入 name[16] 超出数组边界。"),
    ("数组越界",
     "文件 src/parse/line.c 第 12 行：访问 line[len - 1]。\n"
     "if (len > 0 && line[len - 1] == '\\n') line[len - 1] = '\\0';",
     "否", "访问前已判断 len > 0，下标始终在合法范围内。"),
    ("资源泄漏",
     "文件 src/io/file.c 第 71 行：文件句柄 fp 在提前返回时未关闭。\n"
     "FILE *fp = fopen(path, \"r\");\nif (!parse_header(fp)) return false;\nfclose(fp);",
     "是", "parse_header 失败时直接返回，fp 没有调用 fclose，文件句柄泄漏。"),
    ("资源泄漏",
     "文件 src/io/log.c 第 9 行：日志文件描述符未关闭。\n"
     "static int log_fd = -1;\nlog_fd = open(LOG_PATH, O_WRONLY | O_APPEND);",
     "否", "log_fd 是全局日志句柄，在进程整个生命周期内使用，退出时由系统回收。"),
]


def make_records(n: int, *, event_repeat: int = 1, start: int = 0) -> list[dict]:
    """``n`` records cycling through SAMPLES; ``event_repeat`` makes the events longer."""
    rows = []
    for i in range(start, start + n):
        subtype, event, judgement, reason = SAMPLES[i % len(SAMPLES)]
        raw = RawSample(subtype=subtype, task=TASK, event="\n".join([event] * event_repeat),
                        output_format=OUTPUT_FORMAT, judgement=judgement, reason=reason)
        rows.append(raw_to_record(raw, f"sample_{i:03d}.json#0").to_json())
    return rows


def write_records(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    return path
