"""The functions of C, C++ and Java source files: which files to read, their text, and where each function
definition starts and ends, found with tree-sitter.

A defect judge is asked about one function at a time: the function enclosing the line a static analyzer
reported (``enclosing_function``), or every function of a file (``functions``). A function's ``code`` is the
file's own text of its lines, so a question about new code reads like a training sample.

tree-sitter parses C before preprocessing, and real C splits statements across ``#ifdef`` branches (two
``if (...) {`` heads sharing one body, a brace opened in both branches and closed once after ``#endif``).
Parsed as it is, such a file puts the lines after the split in no function, or in the wrong one. So C and C++
are parsed from a copy in which every directive line, and every branch of a conditional but one, is blanked
byte for byte (``preprocessed``): the tree's lines and byte offsets are the file's own. The branch kept is the
first, but the ``#else`` of an ``#if 0``, whose first branch is dead code. A function's name and lines come
from that tree; its code from the file.
"""
from __future__ import annotations

import functools
import importlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from defect_judge.errors import InputError, RunError

EXTENSIONS = {
    ".c": "c", ".h": "c",
    ".cc": "cpp", ".cpp": "cpp", ".cxx": "cpp", ".c++": "cpp", ".hh": "cpp", ".hpp": "cpp", ".hxx": "cpp",
    ".java": "java",
}
LANGUAGES = ("c", "cpp", "java")
BINARY_PROBE_BYTES = 8192  # a NUL byte this early means a binary file, not source

# The nodes that are a function definition, per language. A Java method without a body (abstract, an
# interface's, native) declares a function without defining one, and is left out.
DEFINITION_TYPES = {
    "c": ("function_definition",),
    "cpp": ("function_definition",),
    "java": ("method_declaration", "constructor_declaration", "compact_constructor_declaration"),
}
# Where a C/C++ declarator chain ends: the name as written.
NAME_TYPES = frozenset({"identifier", "qualified_identifier", "field_identifier", "destructor_name",
                        "operator_name", "operator_cast", "template_function", "template_method"})

CONDITIONAL_OPENERS = frozenset({b"if", b"ifdef", b"ifndef"})
CONDITIONAL_BRANCHES = frozenset({b"else", b"elif", b"elifdef", b"elifndef"})
DIRECTIVE_NAME = re.compile(rb"\s*#\s*([a-z]*)")
IF_ZERO = re.compile(rb"\s*#\s*if\s*\(?\s*0\s*\)?\s*(?://.*|/\*.*)?", re.DOTALL)


@dataclass(frozen=True)
class SourceFile:
    path: Path
    text: str          # the decoded text; bytes that are not UTF-8 replaced by U+FFFD
    language: str      # "c" | "cpp" | "java"
    replaced: bool     # the file was not valid UTF-8 (a caller says so once per file)


@dataclass(frozen=True)
class Function:
    name: str          # as written: f, Foo::bar, ~Foo, operator==, a Java method or constructor name ("" when
                       # the parser could not tell)
    start_line: int    # 1-based, a C++ template line and Java annotations included
    end_line: int      # 1-based, inclusive
    code: str          # the file's text of start_line..end_line, lines joined with "\n"


@dataclass(frozen=True)
class _Definition:
    function: Function
    depth: int         # how many definitions hold this one (0: not inside another function)


def unknown_extension(path: str | os.PathLike) -> InputError:
    return InputError(f"not a C, C++ or Java file; known extensions: {', '.join(EXTENSIONS)}", path=path)


def language_of(path: str | os.PathLike) -> str | None:
    """The language of a file by its extension (case-insensitive); None when the extension is unknown."""
    return EXTENSIONS.get(Path(path).suffix.lower())


def read_source(path: str | os.PathLike, language: str | None = None) -> SourceFile | None:
    """A source file's text; None for a binary file (a NUL byte in its first 8 KiB). The language is the
    extension's unless given. A file that cannot be read raises OSError."""
    path = Path(path)
    if language is None:
        language = language_of(path)
        if language is None:
            raise unknown_extension(path)
    elif language not in LANGUAGES:
        raise InputError(f"unknown language {language!r}; known: {', '.join(LANGUAGES)}", path=path)
    data = path.read_bytes()
    if b"\0" in data[:BINARY_PROBE_BYTES]:
        return None
    try:
        text, replaced = data.decode("utf-8-sig"), False
    except UnicodeDecodeError:
        text, replaced = data.decode("utf-8-sig", errors="replace"), True
    return SourceFile(path, text, language, replaced)


def functions(source: SourceFile) -> list[Function]:
    """Every function definition that is not inside another function, in file order: C/C++ free functions,
    methods (in a class body or out of class) and templates; Java methods and constructors with a body, those of
    nested classes included. A lambda, or a method of a class inside a function, belongs to the function around
    it."""
    return [definition.function for definition in _definitions(source) if definition.depth == 0]


def enclosing_function(source: SourceFile, line: int) -> Function | None:
    """The innermost function definition whose lines hold ``line`` (1-based); None when the line is in none
    (a global, a macro, the space between functions, a line past the end)."""
    holding = [d for d in _definitions(source) if d.function.start_line <= line <= d.function.end_line]
    if not holding:
        return None
    # The deepest; of two on the same line that do not nest, the first.
    return max(holding, key=lambda d: d.depth).function


def source_files(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """The files to judge, sorted, each once: each path that is a file (its extension must be known), and the
    files with a known extension under each folder (hidden folders and symlinked folders not entered)."""
    found: dict[Path, Path] = {}  # the file itself -> the path it was named by first
    for given in paths:
        path = Path(given)
        if path.is_dir():
            named = _files_under(path)
        elif path.exists():
            if language_of(path) is None:
                raise unknown_extension(path)
            named = [path]
        else:
            raise InputError("not found", path=path)
        for file in named:
            found.setdefault(file.resolve(), file)
    return sorted(found.values())


def _files_under(folder: Path) -> list[Path]:
    files = []
    for root, folders, names in os.walk(folder):  # os.walk does not follow symlinked folders
        folders[:] = [name for name in folders if not name.startswith(".")]
        for name in names:
            file = Path(root, name)
            # A dangling symlink (an editor's lock file, .#main.c) is not a file to read.
            if language_of(file) is not None and file.is_file():
                files.append(file)
    return files


@functools.lru_cache(maxsize=16)
def _definitions(source: SourceFile) -> tuple[_Definition, ...]:
    """Every function definition of a file, nested ones included, in file order: parsed once for all the
    questions asked about one file."""
    data = source.text.encode("utf-8")
    if source.language != "java":
        data = preprocessed(data)
    spans = sorted(((_outer_node(node), node) for node in _definition_nodes(data, source.language)),
                   key=lambda span: span[0].start_byte)
    lines = [line.removesuffix("\r") for line in source.text.split("\n")]
    definitions, open_ends = [], []
    for outer, node in spans:
        while open_ends and open_ends[-1] <= outer.start_byte:
            open_ends.pop()
        start, end = outer.start_point.row + 1, _end_line(outer)
        code = "\n".join(lines[start - 1:end])
        definitions.append(_Definition(Function(_name(node, data), start, end, code), len(open_ends)))
        open_ends.append(outer.end_byte)
    return tuple(definitions)


def _definition_nodes(data: bytes, language: str) -> list:
    nodes = _definition_finder(language)(data)
    if language == "java":
        return [node for node in nodes if node.child_by_field_name("body") is not None]
    return nodes


@functools.cache
def _definition_finder(language: str):
    """What finds a language's definition nodes in its bytes: a parser and a query, built once."""
    try:
        import tree_sitter
        grammar = importlib.import_module(f"tree_sitter_{language}")
    except ImportError as error:
        raise RunError(f"reading {language} sources needs tree-sitter and its grammars: pip install "
                       f"tree-sitter tree-sitter-c tree-sitter-cpp tree-sitter-java ({error})") from error
    grammar_language = tree_sitter.Language(grammar.language())
    parser = tree_sitter.Parser(grammar_language)
    pattern = "[" + " ".join(f"({kind})" for kind in DEFINITION_TYPES[language]) + "] @definition"
    query = tree_sitter.Query(grammar_language, pattern)

    def find(data: bytes) -> list:
        return tree_sitter.QueryCursor(query).captures(parser.parse(data).root_node).get("definition", [])
    return find


def _outer_node(node):
    """A definition with its ``template <...>`` heads, which are part of it."""
    while node.parent is not None and node.parent.type == "template_declaration":
        node = node.parent
    return node


def _end_line(node) -> int:
    # A node that ends at the start of a line (after its newline) ends on the line before.
    row = node.end_point.row
    return row if node.end_point.column == 0 and row > node.start_point.row else row + 1


def _name(node, data: bytes) -> str:
    if node.type != "function_definition":  # Java
        name = node.child_by_field_name("name")
        return name.text.decode("utf-8", errors="replace") if name is not None else ""
    declarator = _name_node(node.child_by_field_name("declarator"))
    if declarator is None:
        return ""
    end = declarator.end_byte
    cast = _operator_cast(declarator)
    if cast is not None and cast.child_by_field_name("declarator") is not None:
        end = cast.child_by_field_name("declarator").start_byte  # operator int, not operator int() const
    return " ".join(data[declarator.start_byte:end].decode("utf-8", errors="replace").split())


def _name_node(declarator):
    """Down a C/C++ declarator chain (pointer, reference, function, parenthesized...) to the name."""
    while declarator is not None and declarator.type not in NAME_TYPES:
        if declarator.type == "function_declarator":
            misread = _misread_name(declarator)
            if misread is not None:
                return misread
        inner = declarator.child_by_field_name("declarator")
        if inner is None:  # reference_declarator and parenthesized_declarator name no field
            inner = next((child for child in declarator.named_children
                          if child.type in NAME_TYPES or child.type.endswith("declarator")), None)
        declarator = inner
    return declarator


def _misread_name(function_declarator):
    """The name of ``INLINE size_t size(mpz_t n)``: a macro before the type (INLINE, EXPORT) makes the parser
    take the type for the name and leave the real name, just before the parameters, in an ERROR node."""
    parameters = function_declarator.child_by_field_name("parameters")
    before = parameters.prev_named_sibling if parameters is not None else None
    if before is not None and before.type == "ERROR" and before.named_children \
            and before.named_children[-1].type == "identifier":
        return before.named_children[-1]
    return None


def _operator_cast(name):
    while name is not None and name.type == "qualified_identifier":
        name = name.child_by_field_name("name")
    return name if name is not None and name.type == "operator_cast" else None


def preprocessed(data: bytes) -> bytes:
    """C or C++ bytes with every directive line blanked and, of each conditional, every branch but the first
    (the second of an ``#if 0``): blanked means each byte but a newline made a space, so the result has the
    original's length, lines and byte offsets."""
    lines = data.split(b"\n")
    conditionals: list[list[int]] = []  # per open conditional: [the branch we are in, the branch kept]
    index = 0
    while index < len(lines):
        first = index
        if not lines[index].lstrip(b" \t\f\v").startswith(b"#"):
            if any(branch != kept for branch, kept in conditionals):
                lines[index] = _blank(lines[index])
            index += 1
            continue
        while lines[index].rstrip(b"\r").endswith(b"\\") and index + 1 < len(lines):
            index += 1
        directive = b"\n".join(line.rstrip(b"\r").removesuffix(b"\\") for line in lines[first:index + 1])
        name = DIRECTIVE_NAME.match(directive).group(1)
        if name in CONDITIONAL_OPENERS:
            conditionals.append([0, 1 if IF_ZERO.fullmatch(directive) else 0])
        elif name in CONDITIONAL_BRANCHES and conditionals:
            conditionals[-1][0] += 1
        elif name == b"endif" and conditionals:
            conditionals.pop()
        for blanked in range(first, index + 1):
            lines[blanked] = _blank(lines[blanked])
        index += 1
    return b"\n".join(lines)


def _blank(line: bytes) -> bytes:
    return b" " * len(line)
