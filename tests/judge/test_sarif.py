"""SARIF in and out (defect_judge/judge/sarif.py), on a real cppcheck log: each finding's rule, CWE ids and
defect site; the judged log being the input plus the toolkit's additions only, valid against the official SARIF
2.1.0 schema; the upload copy without the clean results; the refusals of a log that is not SARIF 2.1.0; and a
log's URIs never reaching a file outside the source root."""
from __future__ import annotations

import copy
import json
import os
from pathlib import Path

import pytest

from defect_judge.errors import InputError
from defect_judge.judge.sarif import (PROPERTY_KEY, SARIF_VERSION, Annotation, annotated_log, artifact_path,
                                      findings, read_log, upload_log, write_log)
from helpers import run_cppcheck, sarif_schema_validator

# Three defects cppcheck finds; the markers give their lines.
DEFECTS_C = """\
#include <stdlib.h>

int deref(void)
{
    int *p = NULL;  /* assign */
    return *p;      /* deref */
}

void leak(void)
{
    char *buf = malloc(10);
    if (buf)
        buf[0] = 'a';
}                   /* leak */

int divide(int a)
{
    int zero = 0;   /* zero */
    return a / zero; /* divide */
}
"""


def line_of(marker: str) -> int:
    return next(n for n, text in enumerate(DEFECTS_C.splitlines(), 1) if f"/* {marker} */" in text)


@pytest.fixture(scope="module")
def scan(tmp_path_factory) -> dict:
    """cppcheck run on a folder holding DEFECTS_C, given the folder's absolute path."""
    folder = tmp_path_factory.mktemp("scan")
    source = folder / "src" / "defects.c"
    source.parent.mkdir()
    source.write_text(DEFECTS_C, encoding="utf-8")
    sarif = folder / "cppcheck.sarif"
    run_cppcheck(str(source.parent), sarif, cwd=folder)
    return {"root": folder, "source": source, "sarif": sarif}


@pytest.fixture(scope="module")
def validator():
    return sarif_schema_validator()


def assert_valid(validator, log: dict) -> None:
    errors = [f"{list(error.absolute_path)}: {error.message}" for error in validator.iter_errors(log)]
    assert not errors, errors[:5]


def by_rule(items) -> dict:
    found = {}
    for finding in items:
        assert finding.rule_id not in found, f"two {finding.rule_id} findings"
        found[finding.rule_id] = finding
    return found


# --- a real cppcheck log -------------------------------------------------------------------------------------

def test_cppcheck_findings_rules_cwes_and_defect_sites(scan):
    log = read_log(scan["sarif"])
    found = by_rule(findings(log))
    assert set(found) == {"nullPointer", "memleak", "zerodiv"}
    assert {rule: f.cwes for rule, f in found.items()} == {"nullPointer": (476,), "memleak": (401,),
                                                           "zerodiv": (369,)}
    for finding in found.values():
        assert finding.run == 0
        assert log["runs"][0]["results"][finding.index]["ruleId"] == finding.rule_id
        assert finding.rule is not None and finding.rule["id"] == finding.rule_id
        assert finding.uri_base_id is None
    assert found["nullPointer"].message == "Null pointer dereference: p"
    assert found["memleak"].message == "Memory leak: buf"

    # cppcheck lists the path first and the defect last: the site is the dereference, not the assignment.
    null_locations = log["runs"][0]["results"][found["nullPointer"].index]["locations"]
    assert [loc["physicalLocation"]["region"]["startLine"] for loc in null_locations] == \
        [line_of("assign"), line_of("deref")]
    assert found["nullPointer"].line == line_of("deref")
    assert found["zerodiv"].line == line_of("divide")
    assert found["memleak"].line == line_of("leak")


def test_cppcheck_sites_resolve_to_the_scanned_file(scan):
    log = read_log(scan["sarif"])
    for finding in findings(log):
        # Given an absolute folder, cppcheck writes absolute paths (no file: scheme).
        assert finding.uri == str(scan["source"])
        assert artifact_path(finding, log, scan["root"]) == (Path(os.path.realpath(scan["source"])), "")
        # ... which are outside any other source root.
        assert artifact_path(finding, log, scan["root"] / "src" / "elsewhere") == (None, "outside the source root")


def test_cppcheck_relative_paths_are_relative_to_its_working_folder(scan, tmp_path):
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "defects.c").write_text(DEFECTS_C, encoding="utf-8")
    sarif = tmp_path / "relative.sarif"
    run_cppcheck("src", sarif, cwd=tmp_path)
    log = read_log(sarif)
    items = findings(log)
    assert {f.uri for f in items} == {"src/defects.c"}
    for finding in items:
        assert artifact_path(finding, log, tmp_path) == (Path(os.path.realpath(tmp_path / "src" / "defects.c")), "")
        assert artifact_path(finding, log, tmp_path / "src")[1] == "file not found"


def test_the_real_log_is_valid_sarif(scan, validator):
    assert_valid(validator, read_log(scan["sarif"]))


# --- the judged log: additions only ---------------------------------------------------------------------------

def enriched(log: dict) -> dict:
    """The cppcheck log with what other tools and earlier steps put in a log: a run's automationDetails,
    invocations and properties, a result's own property bag, rank, suppression and fingerprints (all valid
    SARIF)."""
    log = copy.deepcopy(log)
    run = log["runs"][0]
    run["automationDetails"] = {"id": "nightly/cppcheck/2024-01-01"}
    run["invocations"] = [{"executionSuccessful": True, "commandLine": "cppcheck src"}]
    run["properties"] = {"team": "core", "tags": ["nightly"]}
    first, second = run["results"][0], run["results"][1]
    first["properties"] = {"reviewer": "alice", "tags": ["triaged"]}
    first["suppressions"] = [{"kind": "inSource", "status": "accepted", "justification": "known"}]
    first["rank"] = 12.5
    second["fingerprints"] = {"custom/v1": "abc"}
    return log


def with_unknown_fields(log: dict) -> dict:
    """Fields no schema knows (invalid SARIF, but a tool may write them): they must survive too."""
    log = copy.deepcopy(log)
    log["x-top"] = {"any": [1, 2]}
    log["runs"][0]["x-run"] = "kept"
    for result in log["runs"][0]["results"]:
        result["x-custom"] = {"nested": [None, True, 1.5]}
        result["locations"][-1]["x-location"] = 7
    log["runs"][0]["tool"]["driver"]["rules"][0]["x-rule"] = "kept"
    return log


def annotations_for(log: dict) -> dict:
    """One annotation per result: a clean one suppressed under review, one accepted, the rest kept; the
    result with a rank of its own keeps it (rank None)."""
    annotations = {}
    for index, result in enumerate(log["runs"][0]["results"]):
        clean = index % 2 == 1
        annotations[(0, index)] = Annotation(
            properties={"verdict": "clean" if clean else "defect", "subtype": "空指针解引用", "score": 0.25 * index},
            rank=None if "rank" in result else 10.0 * index,
            suppress="judged clean" if clean else None,
            accepted=index == 1,
        )
    return annotations


def our_suppression(annotation: Annotation) -> dict:
    return {"kind": "external", "status": "accepted" if annotation.accepted else "underReview",
            "justification": annotation.suppress}


def strip_ours(out: dict, original: dict, annotations: dict, run_properties: dict) -> dict:
    """``out`` less exactly what annotated_log adds (each addition asserted present as it was asked for)."""
    out = copy.deepcopy(out)
    for (run, index), annotation in annotations.items():
        result, before = out["runs"][run]["results"][index], original["runs"][run]["results"][index]
        assert result["properties"].pop(PROPERTY_KEY) == annotation.properties
        if not result["properties"] and "properties" not in before:
            del result["properties"]
        if annotation.rank is not None:
            assert result["rank"] == annotation.rank
            del result["rank"]
        if annotation.suppress is not None:
            assert result["suppressions"].pop() == our_suppression(annotation)
            if not result["suppressions"] and "suppressions" not in before:
                del result["suppressions"]
    for run, properties in run_properties.items():
        assert out["runs"][run]["properties"].pop(PROPERTY_KEY) == properties
        if not out["runs"][run]["properties"] and "properties" not in original["runs"][run]:
            del out["runs"][run]["properties"]
    return out


RUN_PROPERTIES = {0: {"model": "judge-v1", "threshold": 0.5, "skipped": {"not analysed": 0}}}


@pytest.mark.parametrize("make_input", [enriched, lambda log: with_unknown_fields(enriched(log))],
                         ids=["valid-sarif", "unknown-fields"])
def test_annotated_log_is_the_input_plus_our_fields_only(scan, make_input):
    log = make_input(read_log(scan["sarif"]))
    before = copy.deepcopy(log)
    annotations = annotations_for(log)
    out = annotated_log(log, annotations, RUN_PROPERTIES)
    assert log == before, "the input log was changed"
    assert len(out["runs"][0]["results"]) == len(log["runs"][0]["results"])
    assert [r["ruleId"] for r in out["runs"][0]["results"]] == [r["ruleId"] for r in log["runs"][0]["results"]]
    assert out != log
    assert strip_ours(out, log, annotations, RUN_PROPERTIES) == log


def test_annotated_log_keeps_existing_bags_and_suppressions_and_validates(scan, validator):
    log = enriched(read_log(scan["sarif"]))
    assert_valid(validator, log)
    annotations = annotations_for(log)
    out = annotated_log(log, annotations, RUN_PROPERTIES)
    assert_valid(validator, out)
    first = out["runs"][0]["results"][0]
    assert first["properties"]["reviewer"] == "alice" and first["properties"]["tags"] == ["triaged"]
    assert first["rank"] == 12.5                    # rank None: left as it was
    assert out["runs"][0]["results"][1]["suppressions"] == [our_suppression(annotations[(0, 1)])]
    assert out["runs"][0]["results"][1]["suppressions"][0]["status"] == "accepted"
    assert out["runs"][0]["properties"]["team"] == "core"
    assert out["runs"][0]["properties"][PROPERTY_KEY] == RUN_PROPERTIES[0]


def test_an_existing_suppression_stays_first_and_ours_is_appended(scan):
    log = enriched(read_log(scan["sarif"]))
    out = annotated_log(log, {(0, 0): Annotation({"verdict": "clean"}, rank=3.0, suppress="judged clean")}, {})
    assert out["runs"][0]["results"][0]["suppressions"] == [
        {"kind": "inSource", "status": "accepted", "justification": "known"},
        {"kind": "external", "status": "underReview", "justification": "judged clean"}]
    assert out["runs"][0]["results"][0]["rank"] == 3.0
    assert out["runs"][0]["properties"] == log["runs"][0]["properties"]   # no run properties asked for
    assert "properties" not in annotated_log(read_log(scan["sarif"]), {}, {})["runs"][0]
    assert out["runs"][0]["results"][1] == log["runs"][0]["results"][1]


def test_annotated_log_refuses_a_result_that_is_not_there(scan):
    log = read_log(scan["sarif"])
    with pytest.raises(ValueError, match=r"runs\[0\]\.results\[99\]"):
        annotated_log(log, {(0, 99): Annotation({})}, {})
    with pytest.raises(ValueError):
        annotated_log(log, {(0, -1): Annotation({})}, {})
    with pytest.raises(ValueError, match="rank"):
        annotated_log(log, {(0, 0): Annotation({}, rank=101.0)}, {})


def test_write_log_round_trips(scan, tmp_path):
    log = annotated_log(read_log(scan["sarif"]), {(0, 0): Annotation({"subtype": "内存泄漏"})}, {})
    write_log(tmp_path / "out" / "judged.sarif", log)
    assert read_log(tmp_path / "out" / "judged.sarif") == log
    assert "内存泄漏" in (tmp_path / "out" / "judged.sarif").read_text(encoding="utf-8")


# --- the upload copy -------------------------------------------------------------------------------------------

def test_upload_log_drops_exactly_the_given_results(scan, validator):
    log = annotated_log(enriched(read_log(scan["sarif"])), annotations_for(enriched(read_log(scan["sarif"]))),
                        RUN_PROPERTIES)
    before = copy.deepcopy(log)
    results = log["runs"][0]["results"]
    drop = {(0, 1)}
    out = upload_log(log, drop)
    assert log == before
    assert_valid(validator, out)
    assert out["runs"][0]["results"] == [r for j, r in enumerate(results) if (0, j) not in drop]
    rest_out, rest_in = copy.deepcopy(out), copy.deepcopy(log)
    del rest_out["runs"][0]["results"], rest_in["runs"][0]["results"]
    assert rest_out == rest_in
    assert upload_log(log, set()) == log
    assert upload_log(log, {(0, 0), (0, 1), (0, 2)})["runs"][0]["results"] == []


def test_upload_log_over_two_runs_keeps_the_other_run(scan):
    log = read_log(scan["sarif"])
    log["runs"].append(copy.deepcopy(log["runs"][0]))
    log["runs"].append({"tool": {"driver": {"name": "empty"}}})   # no results: stays without
    out = upload_log(log, {(1, 0), (1, 2)})
    assert out["runs"][0] == log["runs"][0]
    assert out["runs"][1]["results"] == [log["runs"][1]["results"][1]]
    assert out["runs"][2] == log["runs"][2]
    with pytest.raises(ValueError):
        upload_log(log, {(2, 0)})


# --- read_log refusals -----------------------------------------------------------------------------------------

GOOD_RUN = {"tool": {"driver": {"name": "t"}}, "results": []}


@pytest.mark.parametrize("content, words", [
    ("{not json", "invalid JSON"),
    ("[1, 2]", "JSON object"),
    (json.dumps({"version": "2.0.0", "runs": [GOOD_RUN]}), "2.0.0"),
    (json.dumps({"runs": [GOOD_RUN]}), "version"),
    (json.dumps({"version": "2.1.0"}), "no runs"),
    (json.dumps({"version": "2.1.0", "runs": []}), "no runs"),
    (json.dumps({"version": "2.1.0", "runs": {"0": GOOD_RUN}}), "no runs"),
    (json.dumps({"version": "2.1.0", "runs": [GOOD_RUN, 3]}), "runs[1]"),
    (json.dumps({"version": "2.1.0", "runs": [{"tool": {}, "results": {"a": 1}}]}), "runs[0].results"),
    (json.dumps({"version": "2.1.0", "runs": [{"tool": {}, "results": None}]}), "runs[0].results"),
    (json.dumps({"version": "2.1.0", "runs": [GOOD_RUN, {"tool": {}, "results": [{"ruleId": "a"}, "b"]}]}),
     "runs[1].results[1]"),
])
def test_read_log_refuses_what_is_not_a_sarif_2_1_0_log(tmp_path, content, words):
    path = tmp_path / "in.sarif"
    path.write_text(content, encoding="utf-8")
    with pytest.raises(InputError) as caught:
        read_log(path)
    assert str(path) in str(caught.value)
    assert words in str(caught.value)
    assert caught.value.exit_code == 2


def test_read_log_refuses_a_file_that_is_not_utf8(tmp_path):
    path = tmp_path / "in.sarif"
    path.write_bytes(b'{"version": "2.1.0", "runs": [{"x": "\xff"}]}')
    with pytest.raises(InputError, match="UTF-8"):
        read_log(path)


def test_read_log_accepts_runs_without_results(tmp_path):
    path = tmp_path / "in.sarif"
    path.write_text(json.dumps({"version": SARIF_VERSION, "runs": [{"tool": {"driver": {"name": "t"}}}, GOOD_RUN]}),
                    encoding="utf-8")
    assert findings(read_log(path)) == []


# --- findings of other shapes (clang's, CodeQL's) --------------------------------------------------------------

def clang_like_log(root: Path) -> dict:
    """The clang static analyzer's shape: file: URIs, run.artifacts, ruleIndex, one location (the site); plus a
    CodeQL-like result whose rule is in an extension, and a result with only a rule index and its own tags."""
    uri = (root / "x.c").as_uri()
    return {"version": "2.1.0", "runs": [{
        "artifacts": [{"location": {"index": 0, "uri": uri}, "mimeType": "text/plain", "roles": ["resultFile"]}],
        "tool": {
            "driver": {"name": "clang", "rules": [
                {"id": "core.NullDereference", "name": "core.NullDereference"},
                {"id": "unix.Malloc", "properties": {"tags": ["CWE-401"]}}]},
            "extensions": [{"name": "codeql/cpp-queries", "rules": [
                {"id": "cpp/use-after-free", "properties": {"tags": ["external/cwe/cwe-416", "security"]}}]}]},
        "results": [
            {"ruleId": "core.NullDereference", "ruleIndex": 0,
             "message": {"text": "Dereference of null pointer (loaded from variable 'p')"},
             "locations": [{"physicalLocation": {"artifactLocation": {"index": 0, "uri": uri},
                                                 "region": {"startLine": 6, "startColumn": 10}}}]},
            {"rule": {"id": "cpp/use-after-free", "index": 0, "toolComponent": {"index": 0}},
             "message": {"text": "Memory is used after free."},
             "locations": [{"physicalLocation": {"artifactLocation": {"index": 0}, "region": {"startLine": 9}}}]},
            {"ruleIndex": 1, "properties": {"tags": ["CWE-416"]},
             "locations": [{"logicalLocations": [{"name": "f"}]}]},
        ]}]}


def test_findings_of_clang_and_codeql_shapes(tmp_path):
    (tmp_path / "x.c").write_text("int x;\n", encoding="utf-8")
    log = clang_like_log(tmp_path)
    null, freed, indexed = findings(log)
    assert (null.rule_id, null.rule["name"], null.cwes, null.line) == \
        ("core.NullDereference", "core.NullDereference", (), 6)
    assert null.message.startswith("Dereference of null pointer")
    assert artifact_path(null, log, tmp_path) == (Path(os.path.realpath(tmp_path / "x.c")), "")
    # The rule in an extension, by rule.toolComponent; the URI only in run.artifacts[index].
    assert (freed.rule_id, freed.cwes, freed.line) == ("cpp/use-after-free", (416,), 9)
    assert freed.uri == (tmp_path / "x.c").as_uri()
    assert artifact_path(freed, log, tmp_path)[0] == Path(os.path.realpath(tmp_path / "x.c"))
    # Only a ruleIndex: the id comes from the descriptor; the rule's tags, then the result's; no physical site.
    assert (indexed.rule_id, indexed.cwes, indexed.message, indexed.uri) == ("unix.Malloc", (401, 416), "", None)
    assert artifact_path(indexed, log, tmp_path) == (None, "no location")
    assert [(f.run, f.index) for f in (null, freed, indexed)] == [(0, 0), (0, 1), (0, 2)]


# --- artifact_path: the source root is a wall -----------------------------------------------------------------

@pytest.fixture
def tree(tmp_path) -> dict:
    """root/ with src/a.c, src/my file.c, a symlink to a.c, a symlink and a folder link leading out; secret.c
    and root-evil/x.c (a sibling whose name starts like the root's) outside."""
    root = tmp_path / "root"
    (root / "src").mkdir(parents=True)
    (root / "src" / "a.c").write_text("int a;\n")
    (root / "src" / "my file.c").write_text("int b;\n")
    secret = tmp_path / "secret.c"
    secret.write_text("secret\n")
    (tmp_path / "root-evil").mkdir()
    (tmp_path / "root-evil" / "x.c").write_text("evil\n")
    (root / "link.c").symlink_to(secret)
    (root / "linkdir").symlink_to(tmp_path, target_is_directory=True)
    (root / "alias.c").symlink_to(root / "src" / "a.c")
    (tmp_path / "rootlink").symlink_to(root, target_is_directory=True)
    return {"tmp": tmp_path, "root": root, "a": Path(os.path.realpath(root / "src" / "a.c")), "secret": secret}


def site(artifact_location: dict | None, **run_fields) -> tuple:
    """A one-result log whose defect site has this artifactLocation, and its finding."""
    result = {"ruleId": "r", "message": {"text": "m"}}
    if artifact_location is not None:
        result["locations"] = [{"physicalLocation": {"artifactLocation": {"uri": "ignored/first.c"},
                                                     "region": {"startLine": 1}}},
                               {"physicalLocation": {"artifactLocation": artifact_location,
                                                     "region": {"startLine": 2}}}]
    log = {"version": "2.1.0", "runs": [{"tool": {"driver": {"name": "t"}}, "results": [result], **run_fields}]}
    return findings(log)[0], log


OUT = (None, "outside the source root")


def outside_cases(tree) -> list[tuple[dict, dict]]:
    tmp, secret = tree["tmp"], tree["secret"]
    return [
        ({"uri": "../secret.c"}, {}),
        ({"uri": "src/../../secret.c"}, {}),
        ({"uri": "/abs/path/outside"}, {}),
        ({"uri": str(secret)}, {}),
        ({"uri": secret.as_uri()}, {}),
        ({"uri": "file://localhost" + str(secret)}, {}),
        ({"uri": "link.c"}, {}),
        ({"uri": "linkdir/secret.c"}, {}),
        ({"uri": "..%2Fsecret.c"}, {}),
        ({"uri": "%2E%2E/secret.c"}, {}),
        ({"uri": "../root-evil/x.c"}, {}),
        ({"uri": "secret.c", "uriBaseId": "OUT"}, {"originalUriBaseIds": {"OUT": {"uri": tmp.as_uri() + "/"}}}),
        ({"uri": "secret.c", "uriBaseId": "UP"},
         {"originalUriBaseIds": {"UP": {"uri": "../", "uriBaseId": "%SRCROOT%"}}}),
        ({"index": 0}, {"artifacts": [{"location": {"uri": "../secret.c"}}]}),
    ]


def test_no_uri_leads_outside_the_source_root(tree):
    for artifact_location, run_fields in outside_cases(tree):
        finding, log = site(artifact_location, **run_fields)
        assert artifact_path(finding, log, tree["root"]) == OUT, artifact_location
    # The outside files exist: it is the wall, not their absence, that refuses them.
    assert tree["secret"].is_file() and (tree["tmp"] / "root-evil" / "x.c").is_file()


@pytest.mark.parametrize("uri", ["https://example.com/src/a.c", "http://example.com/a.c", "ftp://host/a.c",
                                 "file://otherhost/src/a.c", "C:\\src\\a.c"])
def test_other_schemes_and_hosts_are_not_local(tree, uri):
    finding, log = site({"uri": uri})
    assert artifact_path(finding, log, tree["root"]) == (None, "not a local file")


def test_a_base_that_is_not_local_is_not_local(tree):
    finding, log = site({"uri": "src/a.c", "uriBaseId": "WEB"},
                        originalUriBaseIds={"WEB": {"uri": "https://github.com/o/r/blob/main/"}})
    assert artifact_path(finding, log, tree["root"]) == (None, "not a local file")


def inside_cases(tree) -> list[tuple[dict, dict]]:
    root = tree["root"]
    return [
        ({"uri": "src/a.c"}, {}),
        ({"uri": "./src/../src/a.c"}, {}),
        ({"uri": str(root / "src" / "a.c")}, {}),
        ({"uri": (root / "src" / "a.c").as_uri()}, {}),
        ({"uri": "alias.c"}, {}),                                        # a link that stays inside
        ({"uri": "src/a.c", "uriBaseId": "%SRCROOT%"}, {}),              # unknown base: the source root
        ({"uri": "a.c", "uriBaseId": "SRC"},
         {"originalUriBaseIds": {"SRC": {"uri": "src/", "uriBaseId": "ROOT"}, "ROOT": {"uri": root.as_uri() + "/"}}}),
        ({"uri": "a.c", "uriBaseId": "SRC"}, {"originalUriBaseIds": {"SRC": {"uri": "src/"}}}),
        ({"uri": "src/a.c", "uriBaseId": "SRCROOT"},
         {"originalUriBaseIds": {"SRCROOT": {"description": {"text": "the checkout"}}}}),   # base without a uri
        ({"index": 0}, {"artifacts": [{"location": {"uri": "a.c", "uriBaseId": "SRC"}}],
                        "originalUriBaseIds": {"SRC": {"uri": "src/"}}}),
    ]


def test_uris_inside_the_source_root_give_the_real_file(tree):
    for artifact_location, run_fields in inside_cases(tree):
        finding, log = site(artifact_location, **run_fields)
        assert artifact_path(finding, log, tree["root"]) == (tree["a"], ""), artifact_location
        # A source root given through a symlink is the same wall.
        assert artifact_path(finding, log, tree["tmp"] / "rootlink") == (tree["a"], ""), artifact_location


def test_a_percent_encoded_name_is_decoded(tree):
    finding, log = site({"uri": "src/my%20file.c"})
    assert artifact_path(finding, log, tree["root"]) == (Path(os.path.realpath(tree["root"] / "src" / "my file.c")),
                                                        "")


@pytest.mark.parametrize("uri", ["src/missing.c", "src", "", "src/a.c%00.txt", "nowhere/a.c"])
def test_missing_inside_is_file_not_found(tree, uri):
    finding, log = site({"uri": uri})
    assert artifact_path(finding, log, tree["root"]) == (None, "file not found")


def test_no_location_or_no_uri(tree):
    for artifact_location in (None, {}, {"uriBaseId": "SRC"}, {"index": 3}):
        finding, log = site(artifact_location)
        assert artifact_path(finding, log, tree["root"]) == (None, "no location"), artifact_location


def test_the_site_is_the_last_location(tree):
    finding, _ = site({"uri": "src/a.c"})
    assert (finding.uri, finding.line) == ("src/a.c", 2)
