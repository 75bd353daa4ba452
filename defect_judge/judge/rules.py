"""Which defect subtype a static analyzer's finding is: the question the judge is asked about it.

A finding names its rule (cppcheck's ``nullPointer``, the clang static analyzer's ``core.NullDereference``)
and often the rule's CWE ids (cppcheck and CodeQL tag them, clang does not). ``finding_subtype`` decides, in
this order: a rule that says part of the code was not analysed (cppcheck's ``syntaxError``) is never judged;
the user's ``--rule_map`` adds or overrides rules; a few cppcheck rules whose CWE tag is misleading are not
judged; then the first CWE id the catalogue knows (``data/subtypes.py``); then the shipped table of cppcheck's
and clang's rules, where a rule that covers several subtypes (clang's ``unix.Malloc``: leak, use after free,
double free) is told apart by its message. Anything else has no subtype: the judge was not trained on it, so
it is left as the analyzer reported it.

Message patterns are Python regular expressions searched (``re.search``) in the message, ignoring case; the
first that matches wins, and a rule whose patterns all miss has no subtype.
"""
from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from defect_judge.data.subtypes import DefectSubtype, find_subtype, subtype_for_cwe
from defect_judge.errors import InputError
from defect_judge.fileio import read_json_object

Patterns = tuple[tuple[str, str], ...]   # (message regex, subtype key), tried in order

NULL = "null_pointer_dereference"
OVERFLOW = "buffer_overflow"
MEMORY_LEAK = "memory_leak"
RESOURCE_LEAK = "resource_leak"
INTEGER = "integer_overflow"
ZERO = "division_by_zero"
FREED = "use_after_free"
UNINIT = "uninitialized_variable"

# clang's MallocChecker words a use after free "Use of memory after it is freed", a double free "Attempt to
# free released memory" (C++: "Attempt to delete released memory"), a container's inner pointer "Inner
# pointer of container used after re/deallocation"; its other reports (a free of a local, of an offset pointer,
# a zero-size allocation) are none of the subtypes.
_FREED = (r"after it is (freed|released)|released memory|double free|freed memory"
          r"|used after re-?/?(de|re)?allocation", FREED)
_LEAK = (r"\bleak", MEMORY_LEAK)

SHIPPED_RULES: dict[str, str | Patterns] = {
    # cppcheck (most of these also carry a CWE tag, which is asked first; the table covers those whose CWE
    # the catalogue does not know, e.g. pointerOutOfBounds CWE-758, containerOutOfBounds CWE-398, and logs
    # written without tags).
    "nullPointer": NULL,
    "nullPointerRedundantCheck": NULL,
    "nullPointerOutOfMemory": NULL,
    "nullPointerOutOfResources": NULL,
    "nullPointerDefaultArg": NULL,
    "nullPointerArithmetic": NULL,
    "nullPointerArithmeticRedundantCheck": NULL,
    "ctunullpointer": NULL,
    "arrayIndexOutOfBounds": OVERFLOW,
    "arrayIndexOutOfBoundsCond": OVERFLOW,
    "bufferAccessOutOfBounds": OVERFLOW,
    "negativeIndex": OVERFLOW,
    "pointerOutOfBounds": OVERFLOW,
    "pointerOutOfBoundsCond": OVERFLOW,
    "containerOutOfBounds": OVERFLOW,
    "argumentSize": OVERFLOW,
    "ctuArrayIndex": OVERFLOW,
    "outOfBounds": OVERFLOW,           # std::string / container access out of its bounds
    "insecureCmdLineArgs": OVERFLOW,   # argv copied into a fixed-size buffer
    "containerOutOfBoundsIndexExpression": OVERFLOW,
    "objectIndex": OVERFLOW,           # &x accessed at a non-zero index: past the object
    "memleak": MEMORY_LEAK,
    "memleakOnRealloc": MEMORY_LEAK,
    "leakReturnValNotUsed": MEMORY_LEAK,
    "leakNoVarFunctionCall": MEMORY_LEAK,
    "leakUnsafeArgAlloc": MEMORY_LEAK,
    "resourceLeak": RESOURCE_LEAK,
    "deallocuse": FREED,
    "deallocret": FREED,
    "doubleFree": FREED,
    "thisUseAfterFree": FREED,
    "uninitvar": UNINIT,
    "legacyUninitvar": UNINIT,
    "uninitdata": UNINIT,
    "uninitStructMember": UNINIT,
    "ctuuninitvar": UNINIT,
    "zerodiv": ZERO,
    "zerodivcond": ZERO,
    "integerOverflow": INTEGER,
    "integerOverflowCond": INTEGER,
    "shiftTooManyBits": INTEGER,
    "shiftTooManyBitsSigned": INTEGER,
    "shiftNegative": INTEGER,
    # The clang static analyzer: its SARIF ruleId is the checker's name, and it tags no CWE.
    # core.NullDereference also reports "Dereference of undefined pointer value" (an uninitialized pointer).
    "core.NullDereference": ((r"undefined pointer|garbage|uninitiali[sz]ed", UNINIT), (r"null", NULL)),
    "core.NonNullParamChecker": NULL,
    "unix.cstring.NullArg": NULL,
    "core.DivideZero": ZERO,
    "core.uninitialized.Assign": UNINIT,
    "core.uninitialized.Branch": UNINIT,
    "core.uninitialized.UndefReturn": UNINIT,
    "core.uninitialized.ArraySubscript": UNINIT,
    "core.uninitialized.CapturedBlockVariable": UNINIT,
    "core.uninitialized.NewArraySize": UNINIT,
    # Before clang 18 (core.BitwiseShift) this checker also reported undefined shifts ("The result of the left
    # shift is undefined because ..."), and it says "garbage value due to array index out of bounds" when the
    # operand was read past an array; anything else it reports is a garbage (uninitialized) operand.
    "core.UndefinedBinaryOperatorResult": ((r"\bshift", INTEGER), (r"array index out of bounds", OVERFLOW),
                                           (r".", UNINIT)),
    # "Called function pointer is null (null dereference)", "Called C++ object pointer is null",
    # "Function call argument is an uninitialized value", "Called function pointer is an uninitialized pointer
    # value", "Passed-by-value struct argument contains uninitialized data"; its arity and nil-receiver
    # reports are none of the subtypes.
    "core.CallAndMessage": ((r"\bnull\b", NULL), (r"uninitiali[sz]ed|garbage|undefined", UNINIT)),
    "core.BitwiseShift": INTEGER,
    "alpha.security.MallocOverflow": INTEGER,
    "security.ArrayBound": OVERFLOW,
    "alpha.security.ArrayBound": OVERFLOW,
    "alpha.security.ArrayBoundV2": OVERFLOW,
    "alpha.security.ReturnPtrRange": OVERFLOW,
    "unix.cstring.OutOfBounds": OVERFLOW,
    "alpha.unix.cstring.OutOfBounds": OVERFLOW,
    "security.insecureAPI.strcpy": OVERFLOW,
    "security.insecureAPI.gets": OVERFLOW,
    "unix.Malloc": (_FREED, _LEAK),
    "cplusplus.NewDelete": (_FREED,),
    "cplusplus.NewDeleteLeaks": MEMORY_LEAK,
    "cplusplus.InnerPointer": FREED,
    # "Opened stream never closed. Potential resource leak" (SimpleStream: "Opened File never closed.
    # Potential Resource leak"); the other stream reports (a NULL stream, a use after fclose, EOF checks) are not.
    "unix.Stream": ((r"\bleak|never closed", RESOURCE_LEAK),),
    "alpha.unix.Stream": ((r"\bleak|never closed", RESOURCE_LEAK),),
    "alpha.unix.SimpleStream": ((r"\bleak|never closed", RESOURCE_LEAK),),
}

# cppcheck rule ids that say a file (or part of it) was not analysed: there is no defect to judge, only code
# the analyzer did not understand.
NOT_ANALYSED = frozenset({"syntaxError", "unknownMacro", "preprocessorErrorDirective", "internalAstError",
                          "cppcheckError", "internalError"})

# cppcheck rules whose CWE tag names a catalogue subtype they are not: a base class without a virtual
# destructor (CWE-404, "resource leak"), NaN in arithmetic (CWE-369, "division by zero"), a use after std::move
# or std::forward (CWE-672, "use after free"). Judging them would ask the judge a question about other code.
NOT_JUDGED = frozenset({"virtualDestructor", "nanInArithmeticExpression", "accessMoved", "accessForwarded"})

# The CWE tag forms: CodeQL's and cppcheck's "external/cwe/cwe-476", and "CWE-476", "cwe-476", "CWE:476".
CWE_TAG = re.compile(r"(?:external/cwe/)?cwe[-:](\d+)", re.IGNORECASE)

RULE_MAP_VALUE = 'a subtype name or key, null, or a list of ["message regex", "subtype"] pairs'


@dataclass(frozen=True)
class RuleMap:
    """The user's ``--rule_map``: rule id -> subtype key, None (never judge the rule), or message patterns."""
    entries: Mapping[str, str | None | Patterns]
    path: Path | None = None

    @property
    def source(self) -> str:
        return f"rule map ({self.path})" if self.path is not None else "rule map"


@dataclass(frozen=True)
class SubtypeMatch:
    subtype: DefectSubtype | None
    how: str   # what decided it ("CWE-476", "rule table: nullPointer"), or, without a subtype, why not


@functools.lru_cache(maxsize=None)
def message_pattern(regex: str) -> re.Pattern:
    return re.compile(regex, re.IGNORECASE)


def _subtype_key(text: str, path: Path, rule_id: str) -> str:
    try:
        return find_subtype(text, field=rule_id).key
    except InputError as error:
        raise InputError(error.reason, path=path, field=rule_id) from None


def _patterns(value: list, path: Path, rule_id: str) -> Patterns:
    if not value:
        raise InputError("an empty list of patterns; use null to never judge a rule", path=path, field=rule_id)
    pairs = []
    for pair in value:
        if not (isinstance(pair, list) and len(pair) == 2 and all(isinstance(part, str) for part in pair)):
            raise InputError(f'{pair!r} is not a ["message regex", "subtype"] pair', path=path, field=rule_id)
        regex, subtype = pair
        try:
            message_pattern(regex)
        except re.error as error:
            raise InputError(f"bad message regex {regex!r}: {error}", path=path, field=rule_id) from None
        pairs.append((regex, _subtype_key(subtype, path, rule_id)))
    return tuple(pairs)


def load_rule_map(path: str | os.PathLike) -> RuleMap:
    """--rule_map FILE.json: ``{"ruleId": "空指针解引用" | "null_pointer_dereference" | null |
    [["message regex", "subtype"], ...]}``; anything else is one InputError naming the file and the rule id."""
    path = Path(path)
    data = read_json_object(path, not_object='a rule map must be a JSON object {"ruleId": subtype, ...}')
    entries: dict[str, str | None | Patterns] = {}
    for rule_id, value in data.items():
        if value is None:
            entries[rule_id] = None
        elif isinstance(value, str):
            entries[rule_id] = _subtype_key(value, path, rule_id)
        elif isinstance(value, list):
            entries[rule_id] = _patterns(value, path, rule_id)
        else:
            raise InputError(f"{value!r} is not {RULE_MAP_VALUE}", path=path, field=rule_id)
    return RuleMap(entries, path)


def cwe_ids(tags: Iterable) -> tuple[int, ...]:
    """The CWE ids in a rule's tags, in order and each once; tags of other forms (and non-strings) are ignored."""
    found: list[int] = []
    for tag in tags:
        match = CWE_TAG.fullmatch(tag.strip()) if isinstance(tag, str) else None
        if match and int(match.group(1)) not in found:
            found.append(int(match.group(1)))
    return tuple(found)


def _by_key(key: str) -> DefectSubtype:
    return find_subtype(key, field="rule table")


def _decide(value: str | None | Patterns, message: str, source: str, rule_id: str) -> SubtypeMatch:
    """A subtype by one table entry: a key, None, or message patterns."""
    if value is None:
        return SubtypeMatch(None, f"{source}: rule {rule_id} is never judged")
    if isinstance(value, str):
        return SubtypeMatch(_by_key(value), source)
    for regex, key in value:
        if message_pattern(regex).search(message):
            return SubtypeMatch(_by_key(key), f"{source} (message matches {regex!r})")
    return SubtypeMatch(None, f"no subtype: rule {rule_id}, its message matches none of its patterns ({source})")


def finding_subtype(rule_id: str | None, cwes: Sequence[int], message: str,
                    rule_map: RuleMap | None = None) -> SubtypeMatch:
    """The subtype of one finding, and how it was decided (or why there is none): a not-analysed rule, the
    user's rule map, a rule whose CWE is misleading (NOT_JUDGED), the rule's first known CWE id, the shipped
    rule table, in that order."""
    if rule_id in NOT_ANALYSED:
        return SubtypeMatch(None, f"not analysed ({rule_id})")
    if rule_map is not None and rule_id is not None and rule_id in rule_map.entries:
        return _decide(rule_map.entries[rule_id], message, rule_map.source, rule_id)
    if rule_id in NOT_JUDGED:
        return SubtypeMatch(None, f"no subtype: rule {rule_id} is not judged (its CWE does not fit it)")
    for cwe in cwes:
        subtype = subtype_for_cwe(cwe)
        if subtype is not None:
            return SubtypeMatch(subtype, f"CWE-{cwe}")
    if rule_id is not None and rule_id in SHIPPED_RULES:
        return _decide(SHIPPED_RULES[rule_id], message, f"rule table: {rule_id}", rule_id)
    rule = f"rule {rule_id}" if rule_id is not None else "no rule id"
    known = ", ".join(f"CWE-{cwe}" for cwe in cwes) or "no CWE"
    return SubtypeMatch(None, f"no subtype: {rule}, {known}")
