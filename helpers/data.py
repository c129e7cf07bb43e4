"""Data layer: find, verify (and if allowed, download) the workbook's data files, then load them.

Where a file is looked for, per file, first hit wins:
  1. the folder named by the environment variable TINYRL_DATA, if set (it must exist);
     otherwise `../shared/data` beside the repo root, if that folder exists (only ever read);
  2. the user cache, ~/.cache/tiny-rl-workbook/data (or $TINYRL_CACHE/data);
  3. a download from the upstream URL in data/manifest.json into that cache, unless downloads are
     off (download=False, or TINYRL_NO_DOWNLOAD=1).
Every file is checked against the manifest (size + sha256, or git's blob hash where only that is
known) before it is used, so a stale or truncated copy fails loudly instead of skewing a score.

Loaders return plain lists of dicts (no pandas objects, no torch): see each function's docstring.
`python -m helpers.data` prints which files are present; add `--download` to fetch the missing ones.
"""

from __future__ import annotations

import copy
import hashlib
import http.client
import json
import os
import random
import re
import sys
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

# -----------------------------------------------------------------------------
# config

DATA_ENV = "TINYRL_DATA"  # folder laid out like data/manifest.json's relative paths
CACHE_ENV = "TINYRL_CACHE"  # downloads go to $TINYRL_CACHE/data
NO_DOWNLOAD_ENV = "TINYRL_NO_DOWNLOAD"  # "1" turns downloads off (tests, offline machines)
DEFAULT_CACHE = Path("~/.cache/tiny-rl-workbook")
SHARED_DATA = Path("..") / "shared" / "data"  # relative to the repo root
MANIFEST_FILE = Path(__file__).resolve().parent.parent / "data" / "manifest.json"
DOWNLOAD_TIMEOUT_S = 60  # per socket operation, not for the whole file
CHUNK_BYTES = 1 << 16
MAX_UNKNOWN_BYTES = 64 << 20  # cap for files whose size the manifest does not know (train.es/train.guc)
USER_AGENT = "tiny-rl-workbook-data/0.1"
TRUTHY = ("1", "true", "yes", "on")

BFCL_CATEGORIES = ("simple", "multiple", "parallel", "parallel_multiple", "irrelevance")
BFCL_V4_ONLY = ("simple_python", "simple_java", "simple_javascript")  # v4 split "simple" by language
BFCL_NO_ANSWERS = ("irrelevance",)  # success there = the model makes no call

# xLAM writes Python-ish type names ("str, optional", "List[int]"); JSON-schema names for them.
XLAM_TYPES = {
    "str": "string", "string": "string", "int": "integer", "integer": "integer",
    "float": "number", "number": "number", "bool": "boolean", "boolean": "boolean",
    "list": "array", "tuple": "array", "set": "array", "sequence": "array", "array": "array",
    "dict": "object", "mapping": "object", "object": "object",
    "callable": "string",  # the calls pass code as text, e.g. "lambda x: 2 * x ** 4"
    "any": "string",
}

WAYUU_DIR = "wayuunaiki"


class DataMissingError(FileNotFoundError):
    """One or more data files are nowhere to be found; the message says how to get them."""


class ChecksumError(ValueError):
    """A data file does not match the manifest (size, sha256 or git blob hash)."""


# -----------------------------------------------------------------------------
# where the data lives


def repo_root() -> Path:
    """The repository root: the folder that holds the `helpers` package."""
    return Path(__file__).resolve().parent.parent


def data_dir() -> Path | None:
    """The local data folder in use: $TINYRL_DATA if set, else ../shared/data if it exists, else None."""
    env = os.environ.get(DATA_ENV, "").strip()
    if env:
        path = Path(env).expanduser().resolve()
        if not path.is_dir():  # a typo here should not silently fall through to a download
            raise DataMissingError(f"{DATA_ENV}={env!r} is not a folder. Point it at a folder laid out "
                                   f"like data/manifest.json's paths (e.g. <folder>/bfcl/BFCL_v3_simple.json), "
                                   f"or unset it.")
        return path
    shared = (repo_root() / SHARED_DATA).resolve()
    return shared if shared.is_dir() else None


def cache_dir() -> Path:
    """Where downloads go (and are looked for): $TINYRL_CACHE/data or ~/.cache/tiny-rl-workbook/data."""
    env = os.environ.get(CACHE_ENV, "").strip()
    return (Path(env) if env else DEFAULT_CACHE).expanduser() / "data"


def downloads_allowed(download: bool | None = None) -> bool:
    """An explicit download= wins; otherwise downloads are on unless TINYRL_NO_DOWNLOAD is truthy."""
    if download is not None:
        return bool(download)
    return os.environ.get(NO_DOWNLOAD_ENV, "").strip().lower() not in TRUTHY


def _search_dirs() -> list[Path]:
    dirs = [d for d in (data_dir(), cache_dir()) if d is not None]
    return list(dict.fromkeys(dirs))  # TINYRL_DATA may equal the cache; look once


# -----------------------------------------------------------------------------
# manifest and checksums

_MANIFEST_CACHE: dict[tuple, dict] = {}


def manifest() -> dict:
    """The file entries of data/manifest.json, keyed by relative path (a fresh copy each call)."""
    stat = MANIFEST_FILE.stat()
    key = (str(MANIFEST_FILE), stat.st_size, stat.st_mtime_ns)
    if key not in _MANIFEST_CACHE:
        _MANIFEST_CACHE.clear()
        _MANIFEST_CACHE[key] = json.loads(MANIFEST_FILE.read_text(encoding="utf-8"))["files"]
    return copy.deepcopy(_MANIFEST_CACHE[key])


def _entry(relpath: str) -> dict:
    files = manifest()
    if relpath not in files:
        raise KeyError(f"{relpath!r} is not in data/manifest.json; known files: {sorted(files)}")
    return files[relpath]


def git_blob_sha1(data: bytes) -> str:
    """Git's object id for a file with these bytes (what `git hash-object FILE` prints)."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def file_hashes(path: str | Path) -> dict:
    """{"size", "sha256", "git_blob_sha1"} of a file, read once in chunks."""
    path = Path(path)
    size = path.stat().st_size
    sha256, blob = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)  # blob header needs the size first
    with open(path, "rb") as f:
        while chunk := f.read(CHUNK_BYTES):
            sha256.update(chunk)
            blob.update(chunk)
    return {"size": size, "sha256": sha256.hexdigest(), "git_blob_sha1": blob.hexdigest()}


_VERIFIED: set[tuple] = set()  # (path, size, mtime, expected hashes): re-hash only when a file changes


def verify(path: str | Path, entry: dict) -> None:
    """Raise ChecksumError unless the file matches entry's size, sha256 and git_blob_sha1 (each if given)."""
    path = Path(path)
    expected = {k: entry.get(k) for k in ("size", "sha256", "git_blob_sha1") if entry.get(k) is not None}
    if not ({"sha256", "git_blob_sha1"} & set(expected)):
        raise ValueError(f"manifest entry {entry.get('path')!r} has neither sha256 nor git_blob_sha1")
    stat = path.stat()
    key = (str(path.resolve()), stat.st_size, stat.st_mtime_ns, tuple(sorted(expected.items())))
    if key in _VERIFIED:
        return
    got = file_hashes(path)
    bad = [f"{k}: expected {v}, got {got[k]}" for k, v in expected.items() if got[k] != v]
    if bad:
        raise ChecksumError(f"{path} does not match the manifest entry {entry.get('path')!r} "
                            f"({'; '.join(bad)}). It is corrupt or a different version: replace it with "
                            f"the file from {entry.get('url')}.")
    _VERIFIED.add(key)


# -----------------------------------------------------------------------------
# finding and downloading files


def _find_local(relpath: str, entry: dict) -> Path | None:
    for folder in _search_dirs():
        path = folder / relpath
        if path.is_file():
            verify(path, entry)  # a present-but-wrong file is an error, not a reason to download
            return path
    return None


def _download(entry: dict) -> Path:
    """Fetch entry["url"] into the cache: stream to a temp file, verify, then rename into place."""
    dest = cache_dir() / entry["path"]
    dest.parent.mkdir(parents=True, exist_ok=True)
    # Same folder as dest so the rename is atomic; a crash leaves only a *.part file, never a bad dest.
    fd, tmp_name = tempfile.mkstemp(prefix=dest.name + ".", suffix=".part", dir=dest.parent)
    tmp = Path(tmp_name)
    try:
        request = urllib.request.Request(entry["url"], headers={"User-Agent": USER_AGENT})
        with os.fdopen(fd, "wb") as out, urllib.request.urlopen(request, timeout=DOWNLOAD_TIMEOUT_S) as resp:
            limit, n = entry.get("size") or MAX_UNKNOWN_BYTES, 0
            while chunk := resp.read(CHUNK_BYTES):
                n += len(chunk)
                if n > limit:  # do not stream an error page or a wrong file forever
                    raise ChecksumError(f"{entry['url']} sent more than the expected {limit} bytes")
                out.write(chunk)
        try:
            verify(tmp, entry)
        except ChecksumError as e:
            raise ChecksumError(f"download of {entry['path']} from {entry['url']} failed verification "
                                f"and was deleted: {e}") from None
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return dest


def _how_to_check(entry: dict) -> str:
    if entry.get("sha256"):
        return f"sha256 {entry['sha256']}"
    return f"git blob {entry['git_blob_sha1']} (check with `git hash-object FILE`)"


def missing_message(relpaths: list[str], reasons: dict[str, str] | None = None) -> str:
    """One message naming every missing file, its URL and checksum, and the ways to get it."""
    reasons = reasons or {}
    files = manifest()
    here = data_dir()
    lines = [f"{len(relpaths)} data file(s) not found:"]
    for rel in relpaths:
        entry = files[rel]
        lines.append(f"  - {rel}  ({entry['dataset']})")
        lines.append(f"      url: {entry['url']}")
        lines.append(f"      check: {_how_to_check(entry)}")
        if rel in reasons:
            lines.append(f"      download failed: {reasons[rel]}")
    lines += [
        f"Looked in: {here if here else f'no data folder ({DATA_ENV} unset, {SHARED_DATA} absent)'} "
        f"and the cache {cache_dir()}.",
        "To get them, do one of:",
        f"  1. set {DATA_ENV} to a folder holding these files at these relative paths;",
        f"  2. allow downloads (pass download=True, or unset {NO_DOWNLOAD_ENV}) and they are fetched into "
        f"the cache and verified;",
        f"  3. download the URLs above by hand into {cache_dir()}/<relative path>.",
        "Licences and citations: data/README.md.",
    ]
    return "\n".join(lines)


def require(relpaths, download: bool | None = None) -> dict[str, Path]:
    """Verified local paths for all relpaths; raises ONE DataMissingError listing every file it can't get."""
    files = manifest()
    unknown = [r for r in relpaths if r not in files]
    if unknown:
        raise KeyError(f"not in data/manifest.json: {unknown}")
    found, missing, reasons = {}, [], {}
    for rel in relpaths:
        path = _find_local(rel, files[rel])
        if path is None and downloads_allowed(download):
            try:
                path = _download(files[rel])
            except (OSError, http.client.HTTPException) as e:  # URLError/HTTPError/timeouts are OSErrors
                reasons[rel] = f"{type(e).__name__}: {e}"
        if path is None:
            missing.append(rel)
        else:
            found[rel] = path
    if missing:
        raise DataMissingError(missing_message(missing, reasons))
    return found


def locate(relpath: str, download: bool | None = None) -> Path:
    """A verified local path for one manifest file, downloading it into the cache if needed and allowed."""
    return require([relpath], download)[relpath]


def check_all(download: bool = False) -> dict:
    """Status of every manifest file: {"data_dir", "cache_dir", "present": {rel: path}, "missing": [...],
    "missing_optional": [...], "bad": {rel: message}, "ok": bool}. ok ignores optional files."""
    files = manifest()
    folder = data_dir()
    summary = {"data_dir": str(folder) if folder else None, "cache_dir": str(cache_dir()),
               "present": {}, "missing": [], "missing_optional": [], "bad": {}}
    for rel, entry in files.items():
        try:
            path = _find_local(rel, entry)
            if path is None and download:
                path = locate(rel, download=True)
        except ChecksumError as e:
            summary["bad"][rel] = str(e)
            continue
        except DataMissingError:
            path = None
        if path is not None:
            summary["present"][rel] = str(path)
        elif entry.get("optional"):
            summary["missing_optional"].append(rel)
        else:
            summary["missing"].append(rel)
    summary["ok"] = not summary["missing"] and not summary["bad"]
    return summary


# -----------------------------------------------------------------------------
# small readers


def status_rows(download: bool = False) -> list[dict]:
    """One row per manifest file: dataset, file, status (present / missing / missing, optional / bad)."""
    status = check_all(download=download)
    rows = []
    for rel, entry in manifest().items():
        if rel in status["present"]:
            state = "present"
        elif rel in status["bad"]:
            state = "bad: " + status["bad"][rel]
        elif rel in status["missing_optional"]:
            state = "missing, optional"
        else:
            state = "missing"
        rows.append({"dataset": entry.get("dataset"), "file": rel, "status": state})
    return rows


def _read_jsonl(path: Path) -> list[dict]:
    rows = []
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if line.strip():
                try:
                    rows.append(json.loads(line))
                except json.JSONDecodeError as e:
                    raise ValueError(f"{path}:{lineno}: not valid JSON ({e})") from None
    return rows


def _read_lines(path: Path) -> list[str]:
    # split on "\n" only: str.splitlines() would also break on U+2028, U+0085 etc. inside a sentence
    text = path.read_text(encoding="utf-8")
    if text.endswith("\n"):
        text = text[:-1]
    return text.split("\n") if text else []


def _plain(x):
    """numpy arrays/scalars (as pandas returns them from parquet) -> lists and Python scalars."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_plain(v) for v in x]
    if hasattr(x, "tolist") and not isinstance(x, (str, bytes)):
        return _plain(x.tolist())
    return x


# -----------------------------------------------------------------------------
# BFCL


def bfcl_files(category: str, version: str = "v3") -> tuple[str, str | None]:
    """(question file, answer file or None) relative paths for a BFCL category."""
    if version not in ("v3", "v4"):
        raise ValueError(f"BFCL version must be 'v3' or 'v4', got {version!r}")
    allowed = BFCL_CATEGORIES + (BFCL_V4_ONLY if version == "v4" else ())
    if category not in allowed:
        raise ValueError(f"unknown BFCL {version} category {category!r}; choose from {allowed}")
    if version == "v4" and category == "simple":
        category = "simple_python"  # v4 split simple by language; python is the v3 "simple"
    name = f"BFCL_{version}_{category}.json"
    answers = None if category in BFCL_NO_ANSWERS else f"bfcl/possible_answer/{name}"
    return f"bfcl/{name}", answers


def load_bfcl(category: str, version: str = "v3", download: bool | None = None) -> list[dict]:
    """BFCL non-live single-turn rows: {"id", "question", "functions", "ground_truth"}.

    question is the first turn's list of chat messages (BFCL's question[0]); functions is BFCL's
    "function" list as is (its "dict"/"float" type names are not rewritten); ground_truth is the
    possible-answer list [{func_name: {param: [acceptable values]}}], or None for irrelevance.
    """
    qrel, arel = bfcl_files(category, version)
    paths = require([qrel] + ([arel] if arel else []), download)
    questions = _read_jsonl(paths[qrel])
    answers = None
    if arel:
        answers = {}
        for row in _read_jsonl(paths[arel]):
            if row["id"] in answers:
                raise ValueError(f"{arel}: duplicate id {row['id']!r}")
            answers[row["id"]] = row["ground_truth"]
        qids = [q["id"] for q in questions]
        if len(set(qids)) != len(qids) or set(qids) != set(answers):
            no_answer = sorted(set(qids) - set(answers))
            no_question = sorted(set(answers) - set(qids))
            dups = sorted({i for i in qids if qids.count(i) > 1})
            raise ValueError(f"BFCL {version} {category}: question/answer ids do not match: "
                             f"{len(no_answer)} without answer {no_answer[:5]}, "
                             f"{len(no_question)} without question {no_question[:5]}, "
                             f"duplicate question ids {dups[:5]}")
    return [{"id": q["id"], "question": q["question"][0], "functions": q["function"],
             "ground_truth": answers[q["id"]] if answers is not None else None}
            for q in questions]


# -----------------------------------------------------------------------------
# STAR's xLAM sample


def _split_top(text: str, sep: str = ",") -> list[str]:
    """Split on sep outside brackets: "Tuple[int, int], optional" -> ["Tuple[int, int]", "optional"]."""
    parts, depth, cur = [], 0, ""
    for ch in text:
        depth += (ch == "[") - (ch == "]")
        if ch == sep and depth == 0:
            parts.append(cur.strip())
            cur = ""
        else:
            cur += ch
    parts.append(cur.strip())
    return parts


def xlam_type_schema(type_name: str) -> dict:
    """JSON-schema fragment for one xLAM base type: "List[int]" -> {"type": "array", "items": {"type": "integer"}}."""
    m = re.fullmatch(r"\s*([A-Za-z_][\w.]*)\s*(?:\[(.*)\])?\s*", type_name or "")
    if not m:
        return {"type": "string"}
    head, inner = m.group(1).split(".")[-1].lower(), m.group(2)
    if head in ("union", "optional") and inner:
        options = [xlam_type_schema(t) for t in _split_top(inner)]
        types = {o["type"] for o in options}
        if types <= {"integer", "number"}:
            return {"type": "number" if "number" in types else "integer"}
        return options[0] if len(types) == 1 else {"type": sorted(types)}  # e.g. ["integer", "string"]
    json_type = XLAM_TYPES.get(head, "string")  # unknown names become text, the safest thing to ask for
    schema = {"type": json_type}
    if json_type == "array" and inner:
        items = _split_top(inner)
        # List[X]/Set[X] -> items X; Tuple[X, X] only when all elements agree (no tuple schemas here)
        if len(set(items)) == 1:
            schema["items"] = xlam_type_schema(items[0])
    return schema


def normalize_xlam_tool(tool: dict) -> dict:
    """One xLAM tool -> {"name", "description", "parameters": {"type": "object", "properties", "required"}}.

    xLAM stores parameters either wrapped ({"type": "dict", "properties": {...}}) or as the properties dict
    itself, with types like "str, optional" or "List[int]". Types become JSON-schema names; ", optional"
    (or a default written into the type) means not required; other params are required unless they have a
    "default". An explicit "required" list, when present, wins.
    """
    params = tool.get("parameters") or {}
    # A raw properties dict can have a parameter called "type" (its value is then a dict, not a name).
    wrapped = isinstance(params.get("type"), str) and isinstance(params.get("properties"), dict)
    props = params["properties"] if wrapped else params
    explicit_required = params.get("required") if wrapped else None
    properties, required = {}, []
    for name, spec in props.items():
        spec = spec if isinstance(spec, dict) else {"type": str(spec)}
        base, *flags = _split_top(str(spec.get("type", "str")))
        flags = [f.lower() for f in flags]
        optional = "optional" in flags or base.lower().startswith("optional[")
        default_in_type = any(f.startswith("default") for f in flags)
        prop = xlam_type_schema(base)
        prop.update({k: v for k, v in spec.items() if k not in ("type", "items")})  # description, default, enum
        properties[name] = prop
        if not (optional or default_in_type or "default" in spec):
            required.append(name)
    if isinstance(explicit_required, list):
        required = [r for r in explicit_required if r in properties]
    out = {k: v for k, v in tool.items() if k != "parameters"}
    out["parameters"] = {"type": "object", "properties": properties, "required": required}
    return out


def _parse_call(call: dict) -> dict:
    args = call.get("arguments", {})
    if isinstance(args, str):
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            pass  # keep the text: a reward function should see what the data really says
    return {"name": call["name"], "arguments": args}


def load_xlam(download: bool | None = None) -> list[dict]:
    """STAR's 1,024 xLAM samples: {"id", "messages", "tools", "tools_raw", "ground_truth", "answer_text"}.

    messages are the prompt (every message before the final assistant turn); tools are normalised with
    normalize_xlam_tool (originals in tools_raw); ground_truth is the assistant's tool_calls as
    [{"name", "arguments": dict}]; answer_text is the assistant's text content (None in this file).
    """
    rel = "star_xlam_example_messages/example_messages.jsonl"
    rows = []
    for row in _read_jsonl(locate(rel, download)):
        msgs = row["messages"]
        last = max((i for i, m in enumerate(msgs) if m.get("role") == "assistant"), default=None)
        if last is None:
            raise ValueError(f"{rel}: {row['id']} has no assistant message")
        answer = msgs[last]
        rows.append({
            "id": row["id"],
            "messages": [{"role": m["role"], "content": m["content"]} for m in msgs[:last]],
            "tools": [normalize_xlam_tool(t) for t in row["tools"]],
            "tools_raw": row["tools"],
            "ground_truth": [_parse_call(c) for c in answer.get("tool_calls") or []],
            "answer_text": answer.get("content"),
        })
    return rows


def xlam_split(rows: list[dict], val_fraction: float = 0.1, seed: int = 0) -> tuple[list[dict], list[dict]]:
    """Deterministic (train, val) split by hashing each row's id.

    A row goes to val when sha256(f"{seed}:{id}") read as a fraction in [0, 1) is below val_fraction, so a
    row's side depends only on its id and the seed: not on row order, not on which other rows are
    present (adding rows never moves old ones across). The val size is therefore about, not exactly,
    val_fraction * len(rows). Input order is kept within each side.
    """
    if not 0.0 <= val_fraction <= 1.0:
        raise ValueError(f"val_fraction must be in [0, 1], got {val_fraction}")
    train, val = [], []
    for row in rows:
        digest = hashlib.sha256(f"{seed}:{row['id']}".encode()).digest()
        u = int.from_bytes(digest[:8], "big") / 2**64
        (val if u < val_fraction else train).append(row)
    return train, val


NO_CALL_REPLY = "None of the available tools can do this, so I cannot make a call for this request."


def no_call_negatives(rows: list[dict], n: int, seed: int = 0, reply: str = NO_CALL_REPLY) -> list[dict]:
    """Up to ``n`` rows whose right answer is no call: a row's question paired with another row's tools.

    Every xLAM row calls a tool, so SFT on them alone teaches a model to call whatever it is asked
    (BFCL irrelevance falls as training goes on). A negative keeps row i's messages, takes the tools of a
    row j that shares no tool name with row i, and answers with ``reply`` (ground truth [], which the
    rewards score as right only when the model makes no call). Disjoint names are a proxy for "cannot
    answer": two differently named tools can still overlap in what they do, so a few negatives may be
    wrong. Build train negatives from train rows and validation negatives from validation rows, so no
    question or tool list crosses the split. Deterministic in (rows, n, seed).
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    rng = random.Random(seed)
    order = list(range(len(rows)))
    rng.shuffle(order)
    names = [{t["name"] for t in r["tools"]} for r in rows]
    out = []
    for i in order:
        if len(out) >= n:
            break
        for j in rng.sample(range(len(rows)), k=min(len(rows), 20)):  # a few tries; most pairs are disjoint
            if j != i and rows[j]["tools"] and not names[i] & names[j]:
                out.append({"id": f"{rows[i]['id']}~no-call~{rows[j]['id']}", "messages": rows[i]["messages"],
                            "tools": rows[j]["tools"], "ground_truth": [], "answer_text": reply})
                break
    return out


# -----------------------------------------------------------------------------
# ToolRL


def load_toolrl_sft(download: bool | None = None) -> list[dict]:
    """ToolRL's 400 SFT rows {"instruction", "input", "output"} (R1-distilled thoughts + tool calls)."""
    path = locate("toolrl_rlla_4k/rlla_sft.json", download)
    rows = json.loads(path.read_text(encoding="utf-8"))
    for i, row in enumerate(rows):
        if not {"instruction", "input", "output"} <= set(row):
            raise ValueError(f"{path}: row {i} lacks instruction/input/output (has {sorted(row)})")
    return [{"instruction": r["instruction"], "input": r["input"], "output": r["output"]} for r in rows]


TOOLRL_TOOL_RE = re.compile(r"^\d+\. Name: (.*?)\nDescription: (.*?)\nParameters: (.*?)$(?=\n\d+\. Name: |\Z)", re.S | re.M)
TOOLRL_TAG_RE = {tag: re.compile(rf"<{tag}>(.*?)</{tag}>", re.S) for tag in ("user", "tool_call", "response")}


def toolrl_tools(instruction: str) -> list[dict] | None:
    """The tool list of a ToolRL system prompt ("1. Name: ...\\nDescription: ...\\nParameters: {json}")
    as normalised tools (normalize_xlam_tool); None when the list does not parse. ToolRL writes
    "default": "" for parameters that have no default; that empty default is dropped (it is no
    value), and no parameter is marked required, since the prompt does not say which are."""
    block = instruction.split("**Available Tools**", 1)[-1].split("\n\n**", 1)[0]
    tools = []
    for name, desc, params in TOOLRL_TOOL_RE.findall(block):
        try:
            params = json.loads(params.strip())
        except json.JSONDecodeError:
            return None
        if not isinstance(params, dict) or not all(isinstance(v, dict) for v in params.values()):
            return None
        params = {k: {f: x for f, x in v.items() if not (f == "default" and x == "")} for k, v in params.items()}
        tool = normalize_xlam_tool({"name": name.strip(), "description": desc.strip(), "parameters": params})
        tool["parameters"]["required"] = []  # ToolRL's prompts do not say which are required: claim none
        tools.append(tool)
    return tools or None


def toolrl_rows(rows: list[dict]) -> list[dict]:
    """ToolRL SFT rows as xLAM-style rows {"id", "messages", "tools", "ground_truth", "answer_text"}.

    Kept: single-turn rows (one <user> turn, no earlier calls or tool feedback) whose tools and calls
    parse and whose calls name listed tools. ground_truth is the <tool_call> block's calls ([] when the row only answers in <response>,
    e.g. asking for a missing argument: a no-call example); answer_text the <response> text. The
    R1-distilled <think> is dropped: our cpu model is trained to answer with calls directly.
    """
    out = []
    for i, row in enumerate(rows):
        users = TOOLRL_TAG_RE["user"].findall(row["input"])
        if len(users) != 1 or any(t in row["input"] for t in ("<assistant>", "<tool_call>", "<obs>", "<response>")):
            continue
        tools = toolrl_tools(row["instruction"])
        blocks = TOOLRL_TAG_RE["tool_call"].findall(row["output"])
        responses = TOOLRL_TAG_RE["response"].findall(row["output"])
        calls = []
        try:
            for line in "\n".join(blocks).splitlines():
                if line.strip():
                    c = json.loads(line)
                    calls.append({"name": c["name"], "arguments": c.get("parameters", c.get("arguments", {}))})
        except (json.JSONDecodeError, KeyError, TypeError):
            continue
        if tools is None or not (calls or responses) or not all(isinstance(c["arguments"], dict) for c in calls):
            continue
        if any(c["name"] not in {t["name"] for t in tools} for c in calls):
            continue  # a call to an unlisted tool would teach the model to invent tools
        out.append({"id": f"toolrl-{i}", "messages": [{"role": "user", "content": users[0].strip()}],
                    "tools": tools, "ground_truth": calls,
                    "answer_text": responses[0].strip() if responses and not calls else None})
    return out


TOOLRL_VAL_FRACTION = 0.15  # ToolRL's held-out share: scored, never trained on


def toolrl_split(download: bool | None = None) -> tuple[list[dict], list[dict]]:
    """(train, held-out) ToolRL SFT rows as xLAM-style rows: one split for every notebook and benchmark."""
    return xlam_split(toolrl_rows(load_toolrl_sft(download)), val_fraction=TOOLRL_VAL_FRACTION, seed=0)


def load_toolrl_test(download: bool | None = None) -> list[dict]:
    """ToolRL's 80-row RL test split (veRL format): {"data_source", "prompt": [system, user messages],
    "ability", "reward_model": {"style", "ground_truth"}, "extra_info"} as plain Python objects."""
    import pandas as pd  # imported here so `import helpers.data` stays cheap

    path = locate("toolrl_rlla_4k/test.parquet", download)
    return [_plain(r) for r in pd.read_parquet(path).to_dict(orient="records")]


# -----------------------------------------------------------------------------
# AmericasNLP 2025 Spanish-Wayuunaiki


def wayuunaiki_files(split: str = "dev") -> list[str]:
    if split not in ("dev", "train"):
        raise ValueError(f"split must be 'dev' or 'train', got {split!r} (the guc test set is not public)")
    return [f"{WAYUU_DIR}/{split}.{ext}" for ext in ("es", "guc", "source")]


def load_wayuunaiki(split: str = "dev", download: bool | None = None) -> list[dict]:
    """Line-aligned es-guc pairs: {"es", "guc", "source", "line"}, line = 0-based line index in the files.

    split="train" needs train.es/train.guc, which the shared folder lacks: they are downloaded (and checked
    against their git blob ids) when allowed, else DataMissingError names them. The shared task forbids
    training on dev; use dev for evaluation only.
    """
    paths = require(wayuunaiki_files(split), download)
    es, guc, src = (_read_lines(p) for p in paths.values())
    if not len(es) == len(guc) == len(src):
        raise ValueError(f"wayuunaiki {split}: files are not line-aligned "
                         f"(es {len(es)}, guc {len(guc)}, source {len(src)} lines)")
    return [{"es": e, "guc": g, "source": s, "line": i} for i, (e, g, s) in enumerate(zip(es, guc, src))]


# -----------------------------------------------------------------------------


def _main(argv: list[str]) -> int:
    summary = check_all(download="--download" in argv)
    print(f"data folder: {summary['data_dir']}\ncache: {summary['cache_dir']}")
    for rel, path in summary["present"].items():
        print(f"  ok       {rel}  <- {path}")
    for rel in summary["missing_optional"]:
        print(f"  optional {rel}  (not present; fetched on first use when downloads are allowed)")
    for rel, msg in summary["bad"].items():
        print(f"  BAD      {rel}: {msg}")
    if summary["missing"]:
        print(missing_message(summary["missing"]))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1:]))
