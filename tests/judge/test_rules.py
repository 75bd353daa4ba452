"""Which subtype a static analyzer's finding is (defect_judge/judge/rules.py): CWE tags, the order in which
the user's rule map, CWE ids and the shipped rule table decide, clang's rules told apart by their messages,
the shipped table itself, and the refusals of a bad --rule_map."""
from __future__ import annotations

import json
import re

import pytest

from defect_judge.data.subtypes import SUBTYPES
from defect_judge.errors import InputError
from defect_judge.judge.rules import (NOT_ANALYSED, NOT_JUDGED, SHIPPED_RULES, RuleMap, cwe_ids, finding_subtype,
                                      load_rule_map)

CATALOGUE_KEYS = {subtype.key for subtype in SUBTYPES}


def key_of(match) -> str | None:
    return match.subtype.key if match.subtype is not None else None


# --- cwe_ids -----------------------------------------------------------------------------------------------

def test_cwe_ids_reads_every_tag_form_in_order_and_ignores_the_rest():
    tags = ["security", "external/cwe/cwe-476", "CWE-401", "cwe-369", "CWE:190", "external/cwe/CWE-787",
            "correctness", "cwe", "CWE-", "CWE-12a", "my-cwe-5", 476, None, {"cwe": 1}, " CWE-415 "]
    assert cwe_ids(tags) == (476, 401, 369, 190, 787, 415)


def test_cwe_ids_gives_each_id_once():
    assert cwe_ids(["external/cwe/cwe-476", "CWE-476", "cwe-401"]) == (476, 401)
    assert cwe_ids([]) == ()


# --- finding_subtype: precedence ---------------------------------------------------------------------------

@pytest.mark.parametrize("rule_id", sorted(NOT_ANALYSED))
def test_a_not_analysed_rule_is_never_judged_whatever_else_says_so(rule_id):
    rule_map = RuleMap({rule_id: "null_pointer_dereference"})
    match = finding_subtype(rule_id, (476,), "Null pointer dereference", rule_map)
    assert match.subtype is None
    assert match.how == f"not analysed ({rule_id})"


def test_the_not_analysed_set_holds_cppchecks_failures():
    assert {"syntaxError", "unknownMacro", "preprocessorErrorDirective", "internalAstError", "cppcheckError",
            "internalError"} <= NOT_ANALYSED


def test_the_user_map_overrides_the_cwe_and_the_table(tmp_path):
    rule_map = RuleMap({"nullPointer": "memory_leak"}, tmp_path / "map.json")
    match = finding_subtype("nullPointer", (476,), "Null pointer dereference: p", rule_map)
    assert key_of(match) == "memory_leak"
    assert match.how == f"rule map ({tmp_path / 'map.json'})"


def test_the_user_map_adds_a_rule_nothing_else_knows():
    match = finding_subtype("myTool.nullish", (), "whatever", RuleMap({"myTool.nullish": "null_pointer_dereference"}))
    assert key_of(match) == "null_pointer_dereference"
    assert match.how == "rule map"


def test_null_in_the_user_map_means_never_judged():
    match = finding_subtype("nullPointer", (476,), "Null pointer dereference: p", RuleMap({"nullPointer": None}))
    assert match.subtype is None
    assert "never judged" in match.how and "nullPointer" in match.how


def test_user_map_patterns_decide_by_message_and_a_miss_is_no_subtype():
    rule_map = RuleMap({"custom": (("leak", "memory_leak"), ("free", "use_after_free"))})
    assert key_of(finding_subtype("custom", (), "Memory LEAK here", rule_map)) == "memory_leak"
    assert key_of(finding_subtype("custom", (), "double free", rule_map)) == "use_after_free"
    # The user's entry overrides: a miss is no subtype, not a fall-through to the CWE.
    miss = finding_subtype("custom", (476,), "something else", rule_map)
    assert miss.subtype is None and "custom" in miss.how


def test_a_rule_map_entry_for_another_rule_changes_nothing():
    match = finding_subtype("nullPointer", (476,), "Null pointer dereference: p", RuleMap({"memleak": None}))
    assert key_of(match) == "null_pointer_dereference"
    assert match.how == "CWE-476"


def test_the_cwe_decides_before_the_table():
    # zerodiv is division by zero in the table; its (here: altered) CWE-476 wins.
    match = finding_subtype("zerodiv", (476,), "Division by zero.")
    assert key_of(match) == "null_pointer_dereference"
    assert match.how == "CWE-476"


def test_the_first_cwe_the_catalogue_knows_wins():
    match = finding_subtype("someRule", (561, 401, 476), "")
    assert key_of(match) == "memory_leak"
    assert match.how == "CWE-401"


def test_the_table_decides_when_no_cwe_is_known():
    match = finding_subtype("pointerOutOfBounds", (758,), "Pointer arithmetic overflow.")
    assert key_of(match) == "buffer_overflow"
    assert match.how == "rule table: pointerOutOfBounds"
    assert key_of(finding_subtype("nullPointer", (), "")) == "null_pointer_dereference"


def test_rules_whose_cwe_misleads_are_not_judged():
    # accessMoved carries CWE-672 (a use after free in the catalogue) but is a use after std::move.
    for rule_id, cwe in (("accessMoved", 672), ("virtualDestructor", 404), ("nanInArithmeticExpression", 369)):
        assert rule_id in NOT_JUDGED
        match = finding_subtype(rule_id, (cwe,), "")
        assert match.subtype is None and rule_id in match.how
    # ... unless the user maps them.
    assert key_of(finding_subtype("accessMoved", (672,), "", RuleMap({"accessMoved": "use_after_free"}))) \
        == "use_after_free"


def test_an_unknown_rule_has_no_subtype_and_says_which_rule_and_cwes():
    match = finding_subtype("unusedFunction", (561, 1164), "The function 'f' is never used.")
    assert match.subtype is None
    assert match.how == "no subtype: rule unusedFunction, CWE-561, CWE-1164"
    assert finding_subtype("style.X", (), "").how == "no subtype: rule style.X, no CWE"
    assert finding_subtype(None, (), "").how == "no subtype: no rule id, no CWE"


# --- clang's messages ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("rule_id, message, expected", [
    ("unix.Malloc", "Potential leak of memory pointed to by 'p'", "memory_leak"),
    ("unix.Malloc", "Potential memory leak", "memory_leak"),
    ("unix.Malloc", "Use of memory after it is freed", "use_after_free"),
    ("unix.Malloc", "Attempt to free released memory", "use_after_free"),
    ("unix.Malloc", "Argument to free() is the address of the local variable 'x', which is not memory allocated "
                    "by malloc()", None),
    ("unix.Malloc", "Use of memory allocated with size zero", None),
    ("cplusplus.NewDelete", "Use of memory after it is freed", "use_after_free"),
    ("cplusplus.NewDelete", "Attempt to delete released memory", "use_after_free"),
    ("cplusplus.NewDeleteLeaks", "Potential leak of memory pointed to by 'p'", "memory_leak"),
    ("core.CallAndMessage", "Called function pointer is null (null dereference)", "null_pointer_dereference"),
    ("core.CallAndMessage", "Called C++ object pointer is null", "null_pointer_dereference"),
    ("core.CallAndMessage", "Function call argument is an uninitialized value", "uninitialized_variable"),
    ("core.CallAndMessage", "1st function call argument is an uninitialized value", "uninitialized_variable"),
    ("core.CallAndMessage", "Called function pointer is an uninitialized pointer value", "uninitialized_variable"),
    ("core.CallAndMessage", "Function taking 2 arguments is called with fewer (1)", None),
    ("core.NullDereference", "Dereference of null pointer (loaded from variable 'p')", "null_pointer_dereference"),
    ("core.NullDereference", "Access to field 'x' results in a dereference of a null pointer (loaded from "
                             "variable 'p')", "null_pointer_dereference"),
    ("core.NullDereference", "Dereference of undefined pointer value", "uninitialized_variable"),
    ("core.UndefinedBinaryOperatorResult", "The left operand of '+' is a garbage value", "uninitialized_variable"),
    ("core.UndefinedBinaryOperatorResult", "The result of the left shift is undefined because the right operand "
                                           "is negative", "integer_overflow"),
    ("unix.Stream", "Opened stream never closed. Potential resource leak", "resource_leak"),
    ("alpha.unix.Stream", "Opened stream never closed. Potential resource leak", "resource_leak"),
    ("alpha.unix.SimpleStream", "Opened File never closed. Potential Resource leak", "resource_leak"),
    ("unix.Stream", "Stream pointer might be NULL", None),
    ("alpha.unix.Stream", "Stream pointer might be NULL", None),
    ("alpha.unix.SimpleStream", "Closing a previously closed file stream", None),
    ("core.DivideZero", "Division by zero", "division_by_zero"),
    ("core.uninitialized.Branch", "Branch condition evaluates to a garbage value", "uninitialized_variable"),
    ("core.BitwiseShift", "Left shift by '32' overflows the capacity of 'int'", "integer_overflow"),
    ("security.ArrayBound", "Out of bound access to memory after the end of 'buf'", "buffer_overflow"),
    ("unix.cstring.NullArg", "Null pointer passed as 1st argument to string copy function",
     "null_pointer_dereference"),
])
def test_clang_rules_by_their_messages(rule_id, message, expected):
    match = finding_subtype(rule_id, (), message)
    assert key_of(match) == expected, match.how
    if expected is None:
        assert rule_id in match.how
    else:
        assert match.how.startswith(f"rule table: {rule_id}")


# --- the shipped table ---------------------------------------------------------------------------------------

def test_every_shipped_value_is_a_catalogue_key_and_every_regex_compiles():
    for rule_id, value in SHIPPED_RULES.items():
        if isinstance(value, str):
            assert value in CATALOGUE_KEYS, rule_id
            continue
        assert isinstance(value, tuple) and value, rule_id
        for regex, key in value:
            re.compile(regex)
            assert key in CATALOGUE_KEYS, (rule_id, regex)


def test_every_subtype_has_a_cppcheck_rule_and_a_clang_rule():
    def keys(value):
        return {value} if isinstance(value, str) else {key for _, key in value}

    cppcheck = set().union(*(keys(v) for r, v in SHIPPED_RULES.items() if "." not in r))
    clang = set().union(*(keys(v) for r, v in SHIPPED_RULES.items() if "." in r))
    assert cppcheck == CATALOGUE_KEYS
    assert clang == CATALOGUE_KEYS


@pytest.mark.parametrize("rule_id, expected", [
    ("nullPointer", "null_pointer_dereference"), ("ctunullpointer", "null_pointer_dereference"),
    ("nullPointerArithmetic", "null_pointer_dereference"), ("arrayIndexOutOfBounds", "buffer_overflow"),
    ("containerOutOfBounds", "buffer_overflow"), ("argumentSize", "buffer_overflow"),
    ("memleak", "memory_leak"), ("leakNoVarFunctionCall", "memory_leak"), ("resourceLeak", "resource_leak"),
    ("deallocuse", "use_after_free"), ("doubleFree", "use_after_free"), ("uninitvar", "uninitialized_variable"),
    ("uninitStructMember", "uninitialized_variable"), ("zerodivcond", "division_by_zero"),
    ("integerOverflow", "integer_overflow"), ("shiftNegative", "integer_overflow"),
])
def test_cppcheck_rules_without_their_cwe(rule_id, expected):
    assert key_of(finding_subtype(rule_id, (), "")) == expected


def test_no_rule_is_both_shipped_and_not_analysed_or_not_judged():
    assert not (set(SHIPPED_RULES) & (NOT_ANALYSED | NOT_JUDGED))


# --- load_rule_map -------------------------------------------------------------------------------------------

def write_map(tmp_path, content) -> str:
    path = tmp_path / "rules.json"
    path.write_text(content if isinstance(content, str) else json.dumps(content, ensure_ascii=False),
                    encoding="utf-8")
    return str(path)


def test_load_rule_map_reads_names_keys_null_and_patterns(tmp_path):
    path = write_map(tmp_path, {
        "nullPointer": "空指针解引用",
        "myLeak": "memory_leak",
        "noisy": None,
        "mixed": [["leak", "资源未释放"], ["use.*freed", "use_after_free"]],
    })
    rule_map = load_rule_map(path)
    assert str(rule_map.path) == path
    assert dict(rule_map.entries) == {
        "nullPointer": "null_pointer_dereference",
        "myLeak": "memory_leak",
        "noisy": None,
        "mixed": (("leak", "resource_leak"), ("use.*freed", "use_after_free")),
    }
    assert key_of(finding_subtype("mixed", (), "handle leak", rule_map)) == "resource_leak"
    assert finding_subtype("noisy", (476,), "", rule_map).subtype is None


@pytest.mark.parametrize("content, rule_id, words", [
    ("{not json", None, "invalid JSON"),
    ('["nullPointer", "memory_leak"]', None, "JSON object"),
    ({"ok": "memory_leak", "badSubtype": "stack_smash"}, "badSubtype", "unknown subtype"),
    ({"badPatternSubtype": [["leak", "stack_smash"]]}, "badPatternSubtype", "unknown subtype"),
    ({"badRegex": [["leak(", "memory_leak"]]}, "badRegex", "regex"),
    ({"number": 3}, "number", "is not"),
    ({"object": {"subtype": "memory_leak"}}, "object", "is not"),
    ({"notPairs": ["leak", "memory_leak"]}, "notPairs", "pair"),
    ({"triple": [["leak", "memory_leak", "x"]]}, "triple", "pair"),
    ({"empty": []}, "empty", "empty"),
])
def test_load_rule_map_refuses_in_one_line_naming_the_file_and_the_rule(tmp_path, content, rule_id, words):
    path = write_map(tmp_path, content)
    with pytest.raises(InputError) as caught:
        load_rule_map(path)
    message = str(caught.value)
    assert path in message
    assert words in message
    if rule_id is not None:
        assert f"field '{rule_id}'" in message
    assert "\n" not in message


def test_load_rule_map_names_a_missing_file(tmp_path):
    with pytest.raises(InputError, match="file not found") as caught:
        load_rule_map(tmp_path / "absent.json")
    assert "absent.json" in str(caught.value)
