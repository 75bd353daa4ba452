"""defect_judge/judge/sources.py: the files to judge, their text, and the functions tree-sitter finds in C
(macro-heavy C included, through the length-preserving clean-up of its directives), C++ and Java."""
from __future__ import annotations

from pathlib import Path

import pytest
import tree_sitter
import tree_sitter_c

from defect_judge.errors import InputError
from defect_judge.judge.sources import (EXTENSIONS, Function, SourceFile, enclosing_function, functions,
                                        language_of, preprocessed, read_source, source_files)

MACRO_C = """\
#include <stdio.h>
#define SQUARE(x) ((x) * (x))
#define ADD_TO(a, b) \\
    do { \\
        (a) += (b); \\
    } while (0)

static int counter;

int first(int a, int b)
{
    int total = 0;
#ifdef USE_A
    if (a > 0) {
#else
    if (b > 0) {
#endif
        total = SQUARE(a);
    }
    total += b;
    return total;
}

#if 0
int dead(void) {
    return 0;
#endif

int second(int x)
{
    ADD_TO(x, 1);
    return x;
}

int third(void)
{
    return counter;
}
"""

SPLIT_HEAD_C = """\
#ifdef WIDE
static long scale(long a, long b) {
#else
static int scale(int a) {
#endif
    int b = 2;
    return a * b;
}

int after(void)
{
    return scale(1);
}
"""

WIDGET_CPP = """\
#include <vector>

namespace geo {

class Widget {
public:
    Widget() : count_(0) {}
    ~Widget();
    int count() const {
        return count_;
    }
    bool operator==(const Widget& other) const;
private:
    int count_;
};

Widget::~Widget() {
    count_ = -1;
}

bool Widget::operator==(const Widget& other) const
{
    return count_ == other.count_;
}

template <typename T>
T largest(const std::vector<T>& items)
{
    T best = items[0];
    auto better = [&best](const T& item) {
        return item > best;
    };
    for (const T& item : items) {
        if (better(item)) best = item;
    }
    return best;
}

}  // namespace geo
"""

SHAPES_JAVA = """\
package demo;

public class Shapes {
    private final int size;

    @Deprecated
    @SuppressWarnings("unchecked")
    public Shapes(int size) {
        this.size = size;
    }

    public int size() {
        Runnable r = new Runnable() {
            @Override
            public void run() {
                System.out.println(size);
            }
        };
        r.run();
        return size;
    }

    static class Circle {
        abstract double area();

        double twice() {
            return 2 * area();
        }
    }
}
"""


def write(folder: Path, name: str, text: str | bytes) -> Path:
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def source(folder: Path, name: str, text: str | bytes) -> SourceFile:
    read = read_source(write(folder, name, text))
    assert read is not None
    return read


def spans(source_file: SourceFile) -> list[tuple[str, int, int]]:
    return [(f.name, f.start_line, f.end_line) for f in functions(source_file)]


def enclosing_name(source_file: SourceFile, line: int) -> str | None:
    found = enclosing_function(source_file, line)
    return found.name if found is not None else None


def raw_c_definitions(text: str) -> list[tuple[str, int]]:
    """The function definitions tree-sitter finds in C parsed as it is, without the clean-up: the declarator's
    first identifier and the 1-based first line."""
    parser = tree_sitter.Parser(tree_sitter.Language(tree_sitter_c.language()))
    found, stack = [], [parser.parse(text.encode()).root_node]
    while stack:
        node = stack.pop()
        if node.type == "function_definition":
            declarator = node.child_by_field_name("declarator")
            while declarator.type != "identifier":
                declarator = declarator.child_by_field_name("declarator")
            found.append((declarator.text.decode(), node.start_point.row + 1))
        stack.extend(reversed(node.children))
    return found


def line_of(text: str, fragment: str) -> int:
    """The 1-based line of the only line holding ``fragment``."""
    hits = [number for number, line in enumerate(text.splitlines(), 1) if fragment in line]
    assert len(hits) == 1, (fragment, hits)
    return hits[0]


def test_language_of_by_extension_case_insensitive():
    assert language_of("a/b.c") == "c" and language_of("x.H") == "c"
    assert [language_of(f"f{suffix}") for suffix in (".cc", ".CPP", ".cxx", ".c++", ".hh", ".hpp", ".hxx")] \
        == ["cpp"] * 7
    assert language_of(Path("Main.Java")) == "java"
    assert language_of("notes.txt") is None and language_of("Makefile") is None
    assert set(EXTENSIONS.values()) == {"c", "cpp", "java"}


def test_c_functions_around_macros_and_a_split_if_head(tmp_path):
    c = source(tmp_path, "m.c", MACRO_C)
    assert spans(c) == [("first", 10, 22), ("second", 29, 33), ("third", 35, 38)]
    assert enclosing_name(c, line_of(MACRO_C, "total = SQUARE(a);")) == "first"
    assert enclosing_name(c, line_of(MACRO_C, "total += b;")) == "first"
    assert enclosing_name(c, line_of(MACRO_C, "if (b > 0) {")) == "first"  # the branch blanked for parsing
    assert enclosing_name(c, line_of(MACRO_C, "ADD_TO(x, 1);")) == "second"
    assert enclosing_name(c, line_of(MACRO_C, "return counter;")) == "third"
    # A directive, a global, the dead #if 0 code and a line past the end are in no function.
    for line in (line_of(MACRO_C, "(a) += (b);"), line_of(MACRO_C, "static int counter;"),
                 line_of(MACRO_C, "int dead(void) {"), 40, 1000):
        assert enclosing_function(c, line) is None, line


def test_the_clean_up_is_what_finds_the_function_with_the_split_if(tmp_path):
    # Parsed as it is, the two `if (...) {` heads leave `first` unbalanced and tree-sitter loses it.
    assert [name for name, _ in raw_c_definitions(MACRO_C)] == ["second", "third"]
    c = source(tmp_path, "m.c", MACRO_C)
    assert enclosing_name(c, line_of(MACRO_C, "total += b;")) == "first"


def test_a_function_head_split_across_branches(tmp_path):
    # Two heads opening one body: parsed as it is, `scale` starts at its second head, and a defect on the
    # first head's line (the branch a build takes) is in no function.
    assert raw_c_definitions(SPLIT_HEAD_C) == [("scale", 4), ("after", 10)]
    c = source(tmp_path, "split.c", SPLIT_HEAD_C)
    assert spans(c) == [("scale", 2, 8), ("after", 10, 13)]
    assert enclosing_name(c, line_of(SPLIT_HEAD_C, "return a * b;")) == "scale"
    assert enclosing_name(c, line_of(SPLIT_HEAD_C, "return scale(1);")) == "after"
    # The code is the file's: both heads, the directives between them.
    assert functions(c)[0].code == "\n".join(SPLIT_HEAD_C.splitlines()[1:8])


def test_if_zero_keeps_its_else_branch(tmp_path):
    text = ("#if 0\n"
            "int old_name(void) {\n"
            "#else\n"
            "int new_name(void) {\n"
            "#endif\n"
            "    return 1;\n"
            "}\n"
            "#if OTHER\n"
            "int kept(void) { return 2; }\n"
            "#elif MORE\n"
            "int second_branch(void) { return 3; }\n"
            "#else\n"
            "int third_branch(void) { return 4; }\n"
            "#endif\n")
    c = source(tmp_path, "zero.c", text)
    assert spans(c) == [("new_name", 4, 7), ("kept", 9, 9)]
    assert enclosing_name(c, 6) == "new_name"
    assert enclosing_function(c, 2) is None and enclosing_function(c, 11) is None


def test_preprocessed_blanks_directives_and_later_branches_byte_for_byte():
    text = (b"#define A(x) \\\r\n"
            b"    (x)\n"
            b"int a;\n"
            b"  #  ifdef X\n"
            b"int b;\n"
            b"#ifdef Y\n"
            b"int c;\n"
            b"#else\n"
            b"int d;\n"
            b"#endif\n"
            b"#else /* not X */\n"
            b"int e;\n"
            b"#if 1\n"
            b"int f;\n"
            b"#endif\n"
            b"#endif\n"
            b"int g;\n")
    cleaned = preprocessed(text)
    assert len(cleaned) == len(text)
    assert [i for i, byte in enumerate(cleaned) if byte == ord("\n")] == \
        [i for i, byte in enumerate(text) if byte == ord("\n")]
    kept = [line.decode() for line in cleaned.split(b"\n") if line.strip()]
    assert kept == ["int a;", "int b;", "int c;", "int g;"]


def test_a_macro_before_the_type_does_not_become_the_name(tmp_path):
    text = "INLINE size_t size (mpz_t n)\n{\n\treturn mpz_sizeinbase (n, 2);\n}\n"
    assert spans(source(tmp_path, "inline.c", text)) == [("size", 1, 4)]


def test_cpp_methods_operators_templates_and_lambdas(tmp_path):
    cpp = source(tmp_path, "widget.cpp", WIDGET_CPP)
    assert cpp.language == "cpp"
    assert spans(cpp) == [("Widget", 7, 7), ("count", 9, 11), ("Widget::~Widget", 17, 19),
                          ("Widget::operator==", 21, 24), ("largest", 26, 37)]
    assert enclosing_name(cpp, line_of(WIDGET_CPP, "return count_;")) == "count"
    assert enclosing_name(cpp, line_of(WIDGET_CPP, "count_ = -1;")) == "Widget::~Widget"
    # A line inside the lambda belongs to the function around it; the template line starts the function.
    assert enclosing_name(cpp, line_of(WIDGET_CPP, "return item > best;")) == "largest"
    assert enclosing_function(cpp, line_of(WIDGET_CPP, "template <typename T>")).start_line == 26
    assert enclosing_function(cpp, line_of(WIDGET_CPP, "~Widget();")) is None  # a declaration only
    assert enclosing_function(cpp, line_of(WIDGET_CPP, "namespace geo {")) is None


def test_cpp_operator_and_destructor_names_in_a_class_body(tmp_path):
    text = ("struct Box {\n"
            "    ~Box() { release(); }\n"
            "    Box& operator=(const Box& other) { return *this; }\n"
            "    explicit operator bool() const { return full; }\n"
            "};\n")
    assert spans(source(tmp_path, "box.hpp", text)) == [("~Box", 2, 2), ("operator=", 3, 3),
                                                        ("operator bool", 4, 4)]


def test_java_constructors_methods_nested_and_anonymous_classes(tmp_path):
    java = source(tmp_path, "Shapes.java", SHAPES_JAVA)
    # The annotations start the constructor; the anonymous class's run() is part of size(); an abstract
    # method has no body to judge.
    assert spans(java) == [("Shapes", 6, 10), ("size", 12, 21), ("twice", 26, 28)]
    assert enclosing_name(java, line_of(SHAPES_JAVA, "this.size = size;")) == "Shapes"
    assert enclosing_name(java, line_of(SHAPES_JAVA, "r.run();")) == "size"
    inner = enclosing_function(java, line_of(SHAPES_JAVA, "System.out.println(size);"))
    assert (inner.name, inner.start_line, inner.end_line) == ("run", 14, 17)
    assert enclosing_name(java, line_of(SHAPES_JAVA, "return 2 * area();")) == "twice"
    assert enclosing_function(java, line_of(SHAPES_JAVA, "abstract double area();")) is None
    assert enclosing_function(java, line_of(SHAPES_JAVA, "private final int size;")) is None


def test_java_record_compact_constructor(tmp_path):
    text = ("record Point(int x, int y) {\n"
            "    Point {\n"
            "        if (x < 0) throw new IllegalArgumentException();\n"
            "    }\n"
            "}\n")
    assert spans(source(tmp_path, "Point.java", text)) == [("Point", 2, 4)]


@pytest.mark.parametrize("name, text", [("m.c", MACRO_C), ("split.c", SPLIT_HEAD_C), ("widget.cpp", WIDGET_CPP),
                                        ("Shapes.java", SHAPES_JAVA)])
def test_code_is_the_files_own_lines(tmp_path, name, text):
    found = functions(source(tmp_path, name, text))
    assert found
    for function in found:
        assert function.code == "\n".join(text.splitlines()[function.start_line - 1:function.end_line])


def test_crlf_lines_are_found_and_their_code_has_plain_newlines(tmp_path):
    text = "int f(void)\r\n{\r\n\treturn 1;\r\n}\r\n\r\nint g(void) { return 2; }\r\n"
    c = source(tmp_path, "crlf.c", text.encode())
    assert functions(c) == [Function("f", 1, 4, "int f(void)\n{\n\treturn 1;\n}"),
                            Function("g", 6, 6, "int g(void) { return 2; }")]


def test_a_file_that_is_not_utf8_is_read_with_replacements(tmp_path):
    data = ("/* caf\xe9 */\nint f(void)\n{\n    return 1; /* na\xefve */\n}\n"
            "int g(void)\n{\n    return 2;\n}\n").encode("latin-1")
    c = read_source(write(tmp_path, "latin.c", data))
    assert c.replaced and c.language == "c"
    assert c.text.startswith("/* caf\ufffd */")
    assert spans(c) == [("f", 2, 5), ("g", 6, 9)]
    assert functions(c)[0].code == "int f(void)\n{\n    return 1; /* na\ufffdve */\n}"
    assert not read_source(write(tmp_path, "plain.c", "int f(void) { return 0; }\n")).replaced


def test_a_binary_file_is_none(tmp_path):
    assert read_source(write(tmp_path, "blob.c", b"\x7fELF\x00\x00\x01int f(void) {}\n")) is None


def test_read_source_language_given_or_by_extension(tmp_path):
    path = write(tmp_path, "snippet.txt", "int f(void) { return 0; }\n")
    assert read_source(path, "cpp").language == "cpp"
    with pytest.raises(InputError, match=r"snippet\.txt: not a C, C\+\+ or Java file; known extensions: \.c"):
        read_source(path)
    with pytest.raises(InputError, match="unknown language 'rust'"):
        read_source(path, "rust")
    with pytest.raises(OSError):
        read_source(tmp_path / "missing.c")


def test_source_files_walks_folders(tmp_path):
    write(tmp_path, "src/b.c", "")
    write(tmp_path, "src/a.java", "")
    write(tmp_path, "src/deep/er/x.HPP", "")
    write(tmp_path, "src/README.md", "")
    write(tmp_path, "src/.git/hooks/pre.c", "")
    write(tmp_path, "src/.cache/y.cpp", "")
    write(tmp_path, "other/z.h", "")
    found = source_files([tmp_path / "src", tmp_path / "other/z.h", tmp_path / "src/b.c"])
    assert found == [tmp_path / "other/z.h", tmp_path / "src/a.java", tmp_path / "src/b.c",
                     tmp_path / "src/deep/er/x.HPP"]


def test_source_files_does_not_follow_symlinked_folders(tmp_path):
    write(tmp_path, "elsewhere/far.c", "")
    write(tmp_path, "src/near.c", "")
    (tmp_path / "src/link").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    assert source_files([tmp_path / "src"]) == [tmp_path / "src/near.c"]


def test_source_files_refuses_unknown_and_missing_paths(tmp_path):
    notes = write(tmp_path, "notes.txt", "")
    with pytest.raises(InputError, match=r"notes\.txt: not a C, C\+\+ or Java file; known extensions: "
                                         r"\.c, \.h, \.cc.*\.java"):
        source_files([notes])
    with pytest.raises(InputError) as raised:
        source_files([tmp_path / "nowhere"])
    assert raised.value.reason == "not found" and raised.value.path == tmp_path / "nowhere"
