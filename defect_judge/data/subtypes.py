"""The defect subtype catalogue: each subtype's name (the one the samples carry, 空指针解引用), its key (the file
stem of the shipped data, null_pointer_dereference), the CWE ids that mean it, and the words of a question about
it (the task phrase and the output format of the design document's prompt).

The shipped sample generator (``dataset/make_sample_data.py``) writes its samples with these names and phrases,
and the judge of new code (``defect_judge/judge/``) asks its questions in them, so a question about a function
reads like a training sample.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from defect_judge.errors import InputError
from defect_judge.templates import format_assistant


@dataclass(frozen=True)
class DefectSubtype:
    key: str                 # file stem of the shipped data, and an English name: null_pointer_dereference
    name: str                # what a sample's instruction[0].subtype says: 空指针解引用
    cwes: tuple[int, ...]    # CWE ids whose findings are this subtype (MITRE's numbering)


SUBTYPES = (
    DefectSubtype("null_pointer_dereference", "空指针解引用", (476,)),
    DefectSubtype("buffer_overflow", "缓冲区溢出", (119, 120, 121, 122, 125, 786, 787, 788)),
    DefectSubtype("memory_leak", "内存泄漏", (401, 771, 772)),
    DefectSubtype("resource_leak", "资源未释放", (775, 404)),
    DefectSubtype("integer_overflow", "整数溢出", (190, 191, 680)),
    DefectSubtype("division_by_zero", "除零", (369,)),
    DefectSubtype("use_after_free", "释放后使用", (415, 416, 672)),
    DefectSubtype("uninitialized_variable", "未初始化变量", (457, 908)),
)
BY_CWE = {cwe: subtype for subtype in SUBTYPES for cwe in subtype.cwes}

# The task of a question: {lang} C / C++ / Java, {unit} 函数 / 方法 / 代码, {subtype} the subtype's name. The
# generator draws among them; a question about new code is asked with the first.
TASK_PHRASES = (
    "请判断下面的{lang}{unit}是否存在{subtype}缺陷。",
    "阅读以下{lang}{unit}，判断其中是否存在{subtype}问题。",
    "下面是一段{lang}{unit}，请分析它是否存在{subtype}缺陷。",
    "请审查下列{lang}{unit}，判断是否存在{subtype}。",
    "作为代码审查人员，请判断以下{lang}{unit}是否包含{subtype}缺陷。",
    "请检查这段{lang}{unit}，判断它是否存在{subtype}缺陷。",
)
YES, NO = "是", "否"  # the judgements of a defective and of a clean sample
REASON_HINTS = ("<简要说明>", "<简要说明判断依据>")
STRICT_FORMAT = "请严格按照以下格式输出：\n"
# A language's name in a task, and what one of its functions is called.
LANGUAGE_WORDS = {"c": ("C", "函数"), "cpp": ("C++", "函数"), "java": ("Java", "方法")}


def output_formats(positive: str = YES, negative: str = NO) -> tuple[str, ...]:
    """The output formats a sample asks for: the answer template with its alternatives and a hint."""
    shapes = tuple(format_assistant(f"{positive}/{negative}", hint) for hint in REASON_HINTS)
    return (*shapes, STRICT_FORMAT + shapes[0])


OUTPUT_FORMATS = output_formats()


def find_subtype(text: str, *, field: str = "subtypes") -> DefectSubtype:
    """A subtype by its name (空指针解引用) or its key (null_pointer_dereference); anything else is one line
    listing what is known."""
    wanted = text.strip()
    for subtype in SUBTYPES:
        if wanted in (subtype.name, subtype.key):
            return subtype
    known = ", ".join(f"{s.key} ({s.name})" for s in SUBTYPES)
    raise InputError(f"unknown subtype {text!r}; known: {known}", field=field)


def find_subtypes(texts: Sequence[str], *, field: str = "subtypes") -> list[DefectSubtype]:
    """Subtypes by name or key, in the catalogue's order, each once; ``all`` is every one."""
    if [t.strip().lower() for t in texts] == ["all"]:
        return list(SUBTYPES)
    chosen = {find_subtype(text, field=field) for text in texts}
    return [subtype for subtype in SUBTYPES if subtype in chosen]


def subtype_for_cwe(cwe: int) -> DefectSubtype | None:
    return BY_CWE.get(cwe)


def question_task(subtype_name: str, language: str) -> str:
    """The task of a question about one function: ``请判断下面的C函数是否存在空指针解引用缺陷。``"""
    lang, unit = LANGUAGE_WORDS[language]
    return TASK_PHRASES[0].format(lang=lang, unit=unit, subtype=subtype_name)
