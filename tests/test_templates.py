"""The document's prompt/answer templates and the shared answer parser."""
import pytest

from defect_judge.templates import (ASSISTANT_TEMPLATE, USER_TEMPLATE, event_char_span, format_assistant,
                                    format_user, judgement_char_span, parse_answer)

YES_NO = ["是", "否"]
SORTED_YES_NO = ["否", "是"]  # as the evaluation's judgement vocabulary lists them


def test_templates_are_the_documents():
    assert USER_TEMPLATE == "任务：{task}\n\n事件：\n{event}\n\n输出格式：\n{output_format}"
    assert ASSISTANT_TEMPLATE == "判断:{judgement}\n\n原因：{reason}"


def test_format_keeps_text_unchanged():
    event = "  int f(int *p) {\n\treturn *p;\n}\n\n"  # leading/trailing whitespace must survive
    user = format_user("任务A ", event, "判断:是/否")
    assert user == "任务：任务A \n\n事件：\n" + event + "\n\n输出格式：\n判断:是/否"
    start, end = event_char_span(user)
    assert user[start:end] == event


def test_event_span_with_headers_inside_the_event():
    event = "printf(\"\\n\\n事件：\\n\");\nx = 1;\n\n事件：\ny"
    user = format_user("t", event, "f")
    start, end = event_char_span(user)
    assert user[start:end] == event


def test_judgement_span():
    answer = format_assistant("有缺陷", "因为……")
    start, end = judgement_char_span(answer)
    assert answer[start:end] == "有缺陷"


@pytest.mark.parametrize("text,expected", [
    ("判断:是\n\n原因：p 未检查", ("是", "p 未检查")),
    ("判断：否\n\n原因：已检查", ("否", "已检查")),        # full-width colon
    ("判断 : 是\n原因: 缺少判空", ("是", "缺少判空")),     # spaces, half-width reason colon
    ("判断：  否。原因：循环上界正确", ("否", "循环上界正确")),
    ("**判断**：是\n\n**原因**：未释放", ("是", "未释放")),  # markdown bold
    ("分析如下。\n判断:否\n\n原因：有检查", ("否", "有检查")),  # text before the answer
    ("判断:是", ("是", None)),                              # missing reason
    ("判断:是的，存在缺陷", ("是", None)),
    ("Judgement: yes\nReason: null deref", (None, None)),   # other language: invalid
    ("判断:可能", (None, None)),                            # not in the vocabulary
    ("", (None, None)),
    ("原因：没有判断", (None, "没有判断")),
    ("判断:是/否\n\n原因：<简要说明>", (None, "<简要说明>")),  # the output format echoed: no decision
    ("判断: 否 / 是", (None, None)),
    ("判断:是｜否", (None, None)),
    ("判断:否\n\n原因：a/b 两个分支都检查了", ("否", "a/b 两个分支都检查了")),  # a slash in the reason is fine
])
def test_parse_answer_yes_no(text, expected):
    parsed = parse_answer(text, YES_NO)
    assert (parsed.judgement, parsed.reason) == expected
    assert parsed.valid == (expected[0] is not None)


def test_parse_answer_longest_vocabulary_entry_wins():
    vocab = ["有缺陷", "无缺陷", "有"]
    assert parse_answer("判断：有缺陷\n\n原因：x", vocab).judgement == "有缺陷"
    assert parse_answer("判断:无缺陷", vocab).judgement == "无缺陷"


def test_parse_answer_without_vocabulary_reads_the_first_word():
    assert parse_answer("判断: 否，理由如下").judgement == "否"
    assert parse_answer("判断:有缺陷\n\n原因：x").judgement == "有缺陷"


def test_parse_round_trips_every_formatted_answer():
    for judgement in ["是", "否", "有缺陷", "无缺陷"]:
        parsed = parse_answer(format_assistant(judgement, "原因文本\n第二行"), ["是", "否", "有缺陷", "无缺陷"])
        assert parsed.judgement == judgement
        assert parsed.reason == "原因文本\n第二行"


@pytest.mark.parametrize("answer, vocabulary, judgement, reason", [
    ("判断:是\n\n原因：函数在 p 为 NULL 时仍解引用 p->next。", SORTED_YES_NO, "是", "函数在 p 为 NULL 时仍解引用 p->next。"),
    ("判断：否\n\n原因：所有分配的内存都在返回前释放。", SORTED_YES_NO, "否", "所有分配的内存都在返回前释放。"),
    ("判断 : 是\n原因 : 循环条件 i <= n 越界写入 buf[n]。", SORTED_YES_NO, "是", "循环条件 i <= n 越界写入 buf[n]。"),
    ("判断：\n否\n\n原因：除数在调用前已检查非零。", SORTED_YES_NO, "否", "除数在调用前已检查非零。"),
    ("**判断**：是\n\n**原因**：fclose 缺失。", SORTED_YES_NO, "是", "fclose 缺失。"),
    ("**判断:** 否\n\n原因：没有问题。", SORTED_YES_NO, "否", "没有问题。"),
    ("判断:**是**\n\n原因：free 之后继续使用了 node。", SORTED_YES_NO, "是", "free 之后继续使用了 node。"),
    ("经过分析，我的结论如下。\n判断：是。原因：count 未初始化就参与了累加。", SORTED_YES_NO, "是", "count 未初始化就参与了累加。"),
    ("判断:否", SORTED_YES_NO, "否", None),
    ("判断：有缺陷\n\n原因：size*count 可能溢出。", ["无缺陷", "有缺陷"], "有缺陷", "size*count 可能溢出。"),
    ("判断：无缺陷", ["无缺陷", "有缺陷"], "无缺陷", None),
    ("判断:有缺陷", ["有", "有缺陷"], "有缺陷", None),  # the longest entry wins
    ("Judgement: yes\n\nReason: the pointer may be NULL.", SORTED_YES_NO, None, None),
    ("Judgment: No. The code frees the buffer.", SORTED_YES_NO, None, None),
    ("判断:可能是\n\n原因：不确定。", SORTED_YES_NO, None, "不确定。"),
    ("这段代码存在空指针解引用。", SORTED_YES_NO, None, None),
    ("", SORTED_YES_NO, None, None),
    ("原因：只给了原因。", SORTED_YES_NO, None, "只给了原因。"),
])
def test_parser_reads_real_looking_answers(answer, vocabulary, judgement, reason):
    parsed = parse_answer(answer, vocabulary)
    assert parsed.judgement == judgement
    assert parsed.reason == reason
    assert parsed.valid == (judgement is not None)
