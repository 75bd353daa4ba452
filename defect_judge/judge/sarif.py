"""SARIF 2.1.0 in and out: reading a static analyzer's log, finding each result's rule, CWE ids and defect
site, opening the site's file only inside the source root, and writing the log back with the judge's verdicts.

The judged log is the input log with additions only: the toolkit's verdict in each judged result's property
bag (under ``PROPERTY_KEY``), its ``rank``, and, for a result judged clean, an ``external`` suppression; the
run's settings in the run's property bag. Everything else (tool, rules, levels, messages, locations,
fingerprints, fields this module does not know) stays as it was, so that tools which read the analyzer's log
read the judged one. GitHub code scanning ignores suppressions, rank and properties (github/codeql-action#1230),
so ``upload_log`` writes a copy without the results judged clean.

A log names files by URI, and a log is input: a URI may point anywhere (``../../etc/passwd``, a symlink, a
``file:`` URI, an ``originalUriBaseIds`` base). ``artifact_path`` resolves the real path and refuses anything
outside the source root before any file is opened.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Collection, Mapping
from urllib.parse import unquote, urlsplit

from defect_judge.errors import InputError
from defect_judge.fileio import read_json_object, write_json_atomic
from defect_judge.judge.rules import cwe_ids

SARIF_VERSION = "2.1.0"
PROPERTY_KEY = "defectJudge"   # the one key of the toolkit's in a SARIF property bag

# artifact_path's reasons for not giving a file.
NO_LOCATION = "no location"
NOT_LOCAL = "not a local file"
OUTSIDE = "outside the source root"
NOT_FOUND = "file not found"


@dataclass(frozen=True)
class Finding:
    run: int                  # runs[run].results[index]
    index: int
    rule_id: str | None
    rule: dict | None         # the rule's reportingDescriptor, when the log has it
    cwes: tuple[int, ...]     # from the rule's tags, then the result's own
    message: str
    uri: str | None           # the defect site: the last location's artifact URI, as written in the log
    uri_base_id: str | None
    line: int | None


@dataclass(frozen=True)
class Annotation:
    properties: dict               # written as result["properties"][PROPERTY_KEY]
    rank: float | None = None      # result["rank"] (0..100); None leaves the result's rank as it was
    suppress: str | None = None    # a clean verdict's justification: an external suppression is appended
    accepted: bool = False         # that suppression's status is "accepted" instead of "underReview"


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _at(items, index) -> dict:
    """items[index] when items is a list and index a valid (non-negative) int, else {}."""
    if isinstance(items, list) and isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(items):
        return _dict(items[index])
    return {}


def read_log(path: str | os.PathLike) -> dict:
    """The log as parsed JSON, refused in one line naming the file (and the run or result) when it is not a
    SARIF 2.1.0 log with runs."""
    path = Path(path)
    log = read_json_object(path, not_object="not a SARIF log: must be a JSON object")
    version = log.get("version")
    if version is None:
        raise InputError(f'not a SARIF log: no "version" (expected "{SARIF_VERSION}")', path=path)
    if version != SARIF_VERSION:
        raise InputError(f"SARIF version {version!r} is not supported; expected \"{SARIF_VERSION}\"", path=path,
                         field="version")
    runs = log.get("runs")
    if not isinstance(runs, list) or not runs:
        raise InputError("the log has no runs", path=path, field="runs")
    for i, run in enumerate(runs):
        if not isinstance(run, dict):
            raise InputError("a run must be a JSON object", path=path, field=f"runs[{i}]")
        if "results" not in run:
            continue
        if not isinstance(run["results"], list):
            raise InputError("results must be a list", path=path, field=f"runs[{i}].results")
        for j, result in enumerate(run["results"]):
            if not isinstance(result, dict):
                raise InputError("a result must be a JSON object", path=path, field=f"runs[{i}].results[{j}]")
    return log


def _tool_component(run: dict, reference: dict | None) -> dict:
    """The tool component a rule reference points into: the driver, or an extension by index, name or guid."""
    tool = _dict(run.get("tool"))
    driver = _dict(tool.get("driver"))
    if reference is None:
        return driver
    extensions = _list(tool.get("extensions"))
    if "index" in reference:
        return _at(extensions, reference["index"])
    for key in ("guid", "name"):
        if key in reference:
            for component in [driver, *extensions]:
                if isinstance(component, dict) and component.get(key) == reference[key]:
                    return component
            return {}
    return driver


def _rule(run: dict, result: dict, rule_id: str | None) -> dict | None:
    """The reportingDescriptor of a result: by ruleIndex / rule.index in its tool component (the driver unless
    rule.toolComponent names another), else by id there (or, without a toolComponent, in any extension)."""
    reference = _dict(result.get("rule"))
    component_ref = reference.get("toolComponent") if isinstance(reference.get("toolComponent"), dict) else None
    component = _tool_component(run, component_ref)
    index = result.get("ruleIndex", reference.get("index"))
    found = _at(component.get("rules"), index)
    if found:
        return found
    if rule_id is None:
        return None
    components = [component]
    if component_ref is None:
        components += [_dict(extension) for extension in _list(_dict(run.get("tool")).get("extensions"))]
    for candidate in components:
        for rule in _list(candidate.get("rules")):
            if isinstance(rule, dict) and rule.get("id") == rule_id:
                return rule
    return None


def _site(run: dict, result: dict) -> tuple[str | None, str | None, int | None]:
    """(uri, uriBaseId, startLine) of the defect site: the last location with a physical location. cppcheck
    and CodeQL list the path to a defect first and the defect last (nullPointer: the assignment of NULL, then
    the dereference; ctunullpointer: the caller, then the callee)."""
    physical = [_dict(location.get("physicalLocation")) for location in _list(result.get("locations"))
                if isinstance(location, dict) and isinstance(location.get("physicalLocation"), dict)]
    if not physical:
        return None, None, None
    site = physical[-1]
    artifact = _dict(site.get("artifactLocation"))
    uri, base = artifact.get("uri"), artifact.get("uriBaseId")
    if "index" in artifact:  # the URI (or its base) may be given only in run.artifacts[index]
        listed = _dict(_at(run.get("artifacts"), artifact["index"]).get("location"))
        uri = uri if isinstance(uri, str) else listed.get("uri")
        base = base if isinstance(base, str) else listed.get("uriBaseId")
    line = _dict(site.get("region")).get("startLine")
    return (uri if isinstance(uri, str) else None, base if isinstance(base, str) else None,
            line if isinstance(line, int) and not isinstance(line, bool) else None)


def _finding(log: dict, run_index: int, index: int) -> Finding:
    run = log["runs"][run_index]
    result = run["results"][index]
    rule_id = result.get("ruleId")
    if not isinstance(rule_id, str):
        rule_id = _dict(result.get("rule")).get("id")
    rule = _rule(run, result, rule_id if isinstance(rule_id, str) else None)
    if not isinstance(rule_id, str):
        rule_id = rule.get("id") if rule is not None else None
    tags = _list(_dict(_dict(rule).get("properties")).get("tags")) + \
        _list(_dict(result.get("properties")).get("tags"))
    text = _dict(result.get("message")).get("text")
    uri, base, line = _site(run, result)
    return Finding(run=run_index, index=index, rule_id=rule_id if isinstance(rule_id, str) else None, rule=rule,
                   cwes=cwe_ids(tags), message=text if isinstance(text, str) else "", uri=uri,
                   uri_base_id=base, line=line)


def findings(log: dict) -> list[Finding]:
    """Every result of every run, in log order (a run without "results" has none)."""
    return [_finding(log, i, j) for i, run in enumerate(log["runs"]) for j in range(len(run.get("results", [])))]


def _local_path(uri: str) -> str | None:
    """The percent-decoded file path of a URI reference (a relative or absolute path, or a file: URI on this
    host), or None for any other scheme or host."""
    parts = urlsplit(uri)
    if parts.scheme.lower() == "file":
        if parts.netloc not in ("", "localhost"):
            return None
    elif parts.scheme or parts.netloc:
        return None
    return unquote(parts.path)


def _base_dir(run: dict, base_id: str | None, root: str, seen: frozenset[str] = frozenset()) -> str | None:
    """The directory a uriBaseId stands for: its originalUriBaseIds URI, itself resolved against its own base;
    an unknown id (%SRCROOT% without an entry), an entry without a URI, or a circular one is the source root.
    None when the base is not a local file."""
    if base_id is None or base_id in seen:
        return root
    entry = _dict(run.get("originalUriBaseIds")).get(base_id)
    if not isinstance(entry, dict) or not isinstance(entry.get("uri"), str):
        return root
    path = _local_path(entry["uri"])
    if path is None:
        return None
    if os.path.isabs(path):
        return path
    parent = _base_dir(run, entry.get("uriBaseId") if isinstance(entry.get("uriBaseId"), str) else None, root,
                       seen | {base_id})
    return None if parent is None else os.path.join(parent, path)


def _inside(path: str, root: str) -> bool:
    return os.path.commonpath([path, root]) == root


def artifact_path(finding: Finding, log: dict, source_root: str | os.PathLike) -> tuple[Path | None, str]:
    """The real path of the defect site's file inside source_root and "", or (None, why not): "no location",
    "not a local file", "outside the source root", "file not found". The path is resolved (symlinks followed,
    ``..`` collapsed) and checked before anything is opened; the path returned is the resolved one, so what is
    read is what was checked."""
    if finding.uri is None:
        return None, NO_LOCATION
    root = os.path.realpath(source_root)
    path = _local_path(finding.uri)
    if path is None:
        return None, NOT_LOCAL
    if not os.path.isabs(path):
        base = _base_dir(_dict(log["runs"][finding.run]), finding.uri_base_id, root)
        if base is None:
            return None, NOT_LOCAL
        path = os.path.join(root, base, path)   # a relative base is relative to the source root
    if "\0" in path:
        return None, NOT_FOUND
    real = os.path.realpath(path)
    if not _inside(real, root):
        return None, OUTSIDE
    if not os.path.isfile(real):
        return None, NOT_FOUND
    return Path(real), ""


def _result(log: dict, run: int, index: int) -> dict:
    runs = log["runs"]
    results = runs[run].get("results") if 0 <= run < len(runs) else None
    if not isinstance(results, list) or not 0 <= index < len(results):
        raise ValueError(f"the log has no result runs[{run}].results[{index}]")
    return results[index]


def _bag(holder: dict) -> dict:
    """holder's property bag, created when it has none."""
    if not isinstance(holder.get("properties"), dict):
        holder["properties"] = {}
    return holder["properties"]


def annotated_log(log: dict, annotations: Mapping[tuple[int, int], Annotation],
                  run_properties: Mapping[int, dict]) -> dict:
    """A deep copy of ``log`` with each (run, index)'s annotation applied and run_properties[run] in that run's
    property bag; nothing else changes (results keep their order, existing suppressions stay and ours is
    appended)."""
    out = copy.deepcopy(log)
    for (run, index), annotation in annotations.items():
        result = _result(out, run, index)
        _bag(result)[PROPERTY_KEY] = copy.deepcopy(annotation.properties)
        if annotation.rank is not None:
            if not 0 <= annotation.rank <= 100:
                raise ValueError(f"rank {annotation.rank} is not within 0..100")
            result["rank"] = annotation.rank
        if annotation.suppress is not None:
            if not isinstance(result.get("suppressions"), list):
                result["suppressions"] = []
            result["suppressions"].append({"kind": "external",
                                           "status": "accepted" if annotation.accepted else "underReview",
                                           "justification": annotation.suppress})
    for run, properties in run_properties.items():
        if not 0 <= run < len(out["runs"]):
            raise ValueError(f"the log has no run runs[{run}]")
        _bag(out["runs"][run])[PROPERTY_KEY] = copy.deepcopy(properties)
    return out


def upload_log(log: dict, drop: Collection[tuple[int, int]]) -> dict:
    """A deep copy without the results in ``drop`` (those judged clean: code scanning shows every result it
    is given); everything else unchanged."""
    for run, index in drop:
        _result(log, run, index)   # a key that names no result is the caller's mistake, not a silent no-op
    out = copy.deepcopy(log)
    dropped = set(drop)
    for i, run in enumerate(out["runs"]):
        if "results" in run:
            run["results"] = [result for j, result in enumerate(run["results"]) if (i, j) not in dropped]
    return out


def write_log(path: str | os.PathLike, log: dict) -> None:
    write_json_atomic(path, log)
