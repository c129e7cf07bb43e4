"""Tests for helpers/data.py: real loaders on the real files (found by the normal order), plus the
lookup order, checksums, missing-data message and download path on small fake layouts. No network:
downloads are served from memory by a urllib opener installed for the test."""

import collections
import email.message
import io
import json
import os
import shutil
import urllib.error
import urllib.request
import urllib.response
from pathlib import Path

import pytest

from helpers import data as D

SINGLE_TURN_COUNTS = {"simple": 400, "multiple": 200, "parallel": 200, "parallel_multiple": 200, "irrelevance": 240}
DEV_SOURCES = {"dictionary": 5902, "bible": 599, "books": 127, "putunka-serruma": 4, "nan": 3}
TRAIN_SOURCES = {"dictionary": 53244, "bible": 5470, "books": 916, "nan": 31, "putunka-serruma": 29, "constitution": 25}
JSON_TYPES = {"string", "integer", "number", "boolean", "array", "object"}


@pytest.fixture(autouse=True)
def _no_downloads(monkeypatch):
    # A test that wants a download says download=True and serves the bytes itself.
    monkeypatch.setenv(D.NO_DOWNLOAD_ENV, "1")


@pytest.fixture
def real_data():
    """The real files via the normal lookup order; skip (fail on CI) when they are not there."""
    summary = D.check_all(download=False)
    if summary["bad"]:
        pytest.fail(f"data files do not match the manifest: {sorted(summary['bad'])}")
    if summary["missing"]:
        reason = (f"{len(summary['missing'])} data files missing (data folder: {summary['data_dir']}); "
                  f"set {D.DATA_ENV} or run `python -m helpers.data --download`")
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return summary


# -----------------------------------------------------------------------------
# fake layouts


def write_layout(root: Path, files: dict[str, bytes], urls: dict[str, str] | None = None) -> dict:
    """Write files under root and return manifest entries that match them."""
    entries = {}
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        entries[rel] = fake_entry(rel, content, (urls or {}).get(rel))
    return entries


def fake_entry(rel: str, content: bytes, url: str | None = None, blob_only: bool = False) -> dict:
    import hashlib

    entry = {"dataset": rel.split("/")[0], "path": rel, "url": url or f"https://example.invalid/{rel}",
             "size": len(content), "sha256": hashlib.sha256(content).hexdigest(),
             "git_blob_sha1": D.git_blob_sha1(content), "licence": "test", "citation": "test"}
    if blob_only:
        entry.update(size=None, sha256=None)
    return entry


@pytest.fixture
def use_manifest(tmp_path, monkeypatch):
    """Point helpers.data at a manifest of our own; returns a function taking the entries."""
    def install(entries: dict) -> Path:
        path = tmp_path / "manifest.json"
        path.write_text(json.dumps({"files": entries}))
        monkeypatch.setattr(D, "MANIFEST_FILE", path)
        return path
    return install


@pytest.fixture
def empty_dirs(tmp_path, monkeypatch):
    """TINYRL_DATA and TINYRL_CACHE at empty folders: nothing can be found locally."""
    data, cache = tmp_path / "data", tmp_path / "cache"
    data.mkdir()
    monkeypatch.setenv(D.DATA_ENV, str(data))
    monkeypatch.setenv(D.CACHE_ENV, str(cache))
    return data, cache / "data"


def bfcl_lines(rows) -> bytes:
    return ("\n".join(json.dumps(r) for r in rows) + "\n").encode()


FAKE_Q = [{"id": f"simple_{i}", "question": [[{"role": "user", "content": f"q{i}"}]],
           "function": [{"name": "f", "parameters": {"type": "dict", "properties": {}}}]} for i in range(2)]
FAKE_A = [{"id": f"simple_{i}", "ground_truth": [{"f": {"x": [i]}}]} for i in range(2)]


# -----------------------------------------------------------------------------
# manifest


def test_manifest_entries_are_complete():
    files = D.manifest()
    assert len(files) == 31
    for rel, e in files.items():
        assert e["path"] == rel
        assert e["url"].startswith("https://raw.githubusercontent.com/") and e["url"].endswith("/" + rel.split("/")[-1])
        assert e["licence"] and e["citation"] and e["dataset"] == rel.split("/")[0]
        assert e["sha256"] or e["git_blob_sha1"]
    for rel, blob in (("wayuunaiki/train.es", "316fc9b5b0edfee664287a7036f455e3be3e9cb1"),
                      ("wayuunaiki/train.guc", "ebd7589acb760d2dd20986640fa660afeac0e823")):
        assert files[rel]["sha256"] is None and files[rel]["git_blob_sha1"] == blob and files[rel]["optional"]
    # the manifest covers exactly what the loaders ask for
    wanted = {"star_xlam_example_messages/example_messages.jsonl", "toolrl_rlla_4k/rlla_sft.json",
              "toolrl_rlla_4k/test.parquet", *D.wayuunaiki_files("dev"), *D.wayuunaiki_files("train")}
    for version in ("v3", "v4"):
        for cat in D.BFCL_CATEGORIES + (D.BFCL_V4_ONLY if version == "v4" else ()):
            wanted |= {f for f in D.bfcl_files(cat, version) if f}
    assert wanted == set(files)


def test_manifest_returns_a_copy():
    D.manifest()["bfcl/BFCL_v3_simple.json"]["sha256"] = "x"
    assert D.manifest()["bfcl/BFCL_v3_simple.json"]["sha256"] != "x"


def test_every_manifest_checksum_matches_local_files(real_data):
    files = D.manifest()
    assert set(real_data["present"]) | set(real_data["missing_optional"]) == set(files)
    for rel, path in real_data["present"].items():
        D._VERIFIED.clear()  # really re-hash, not the memo
        D.verify(path, files[rel])
        got = D.file_hashes(path)
        assert got["size"] == files[rel]["size"] and got["sha256"] == files[rel]["sha256"]


def test_git_blob_hash_known_value(tmp_path):
    assert D.git_blob_sha1(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
    assert D.git_blob_sha1(b"") == "e69de29bb2d1d6434b8b29ae775ad8c2e48c5391"  # git's empty blob
    (tmp_path / "h").write_bytes(b"hello\n")
    assert D.file_hashes(tmp_path / "h")["git_blob_sha1"] == "ce013625030ba8dba906f756967f9e9ca394464a"


# -----------------------------------------------------------------------------
# real loaders


@pytest.mark.parametrize("category,count", SINGLE_TURN_COUNTS.items())
def test_bfcl_v3_counts_and_shape(real_data, category, count):
    rows = D.load_bfcl(category)
    assert len(rows) == count
    assert [r["id"] for r in rows] == [f"{category}_{i}" for i in range(count)]
    for r in rows:
        assert set(r) == {"id", "question", "functions", "ground_truth"}
        assert r["question"] and all(m["role"] == "user" and m["content"] for m in r["question"])
        assert r["functions"] and all("name" in f and "parameters" in f for f in r["functions"])
        if category == "irrelevance":
            assert r["ground_truth"] is None
        else:
            assert r["ground_truth"] and all(len(call) == 1 for call in r["ground_truth"])
    if category == "parallel":
        assert all(len(r["ground_truth"]) >= 2 for r in rows)


def test_bfcl_v4(real_data):
    simple = D.load_bfcl("simple", version="v4")
    assert len(simple) == 400 and simple[0]["id"] == "simple_python_0"
    assert simple == D.load_bfcl("simple_python", version="v4")
    assert len(D.load_bfcl("simple_java", "v4")) == 100
    assert len(D.load_bfcl("simple_javascript", "v4")) == 50
    for cat, n in SINGLE_TURN_COUNTS.items():
        assert len(D.load_bfcl(cat, "v4")) == n
    # multiple is byte-identical between versions (same git blob upstream)
    assert D.load_bfcl("multiple", "v3") == D.load_bfcl("multiple", "v4")


def test_bfcl_rejects_unknown_category_and_version():
    with pytest.raises(ValueError, match="simple_java"):
        D.load_bfcl("simple_java", "v3")
    with pytest.raises(ValueError, match="version"):
        D.load_bfcl("simple", "v2")
    with pytest.raises(ValueError, match="live_simple"):
        D.load_bfcl("live_simple")


def test_xlam_counts_and_shape(real_data):
    rows = D.load_xlam()
    assert len(rows) == 1024
    assert len({r["id"] for r in rows}) == 1024
    ncalls = collections.Counter(len(r["ground_truth"]) for r in rows)
    assert ncalls[1] == 488 and sum(v for k, v in ncalls.items() if k > 1) == 536
    for r in rows:
        assert r["id"].startswith("xlam-")
        assert [m["role"] for m in r["messages"]] == ["user"]
        assert r["answer_text"] is None
        assert 1 <= len(r["tools"]) <= 8 and len(r["tools"]) == len(r["tools_raw"])
        for call in r["ground_truth"]:
            assert set(call) == {"name", "arguments"} and isinstance(call["arguments"], dict)
            assert call["name"] in {t["name"] for t in r["tools"]}
        for t in r["tools"]:
            p = t["parameters"]
            assert p["type"] == "object" and set(p) == {"type", "properties", "required"}
            assert set(p["required"]) <= set(p["properties"])
            for prop in p["properties"].values():
                assert prop["type"] in JSON_TYPES


def test_xlam_normalises_a_real_tool(real_data):
    row = next(r for r in D.load_xlam() if r["id"] == "xlam-13811")
    tool = row["tools"][0]
    assert tool["name"] == "consulta_estabelecimento"
    props = tool["parameters"]["properties"]
    assert {k: v["type"] for k, v in props.items()} == {
        "cnpj": "string", "maxage": "integer", "simpleshistory": "boolean", "registrations": "string",
        "simples": "boolean"}
    assert tool["parameters"]["required"] == []  # every parameter has a default or is optional
    assert row["tools_raw"][0]["parameters"]["properties"]["maxage"]["type"] == "int, optional"  # original kept
    assert row["ground_truth"] == [{"name": "validate_cpf_number", "arguments": {"n": "123.456.789-01"}},
                                   {"name": "get_country_population", "arguments": {"country": "Brazil"}}]


def test_xlam_tool_normalisation_examples():
    bare = {"name": "getrandomword", "description": "d", "parameters": {
        "type": {"description": "word type", "type": "str", "default": "adjective"},
        "count": {"description": "n", "type": "int"},
        "ids": {"description": "ids", "type": "List[int], optional"},
        "pairs": {"description": "p", "type": "List[Tuple[float, float]]"},
        "meta": {"description": "m", "type": "Dict"},
        "user": {"description": "u", "type": "str, default='elonmusk'"},
        "fn": {"description": "f", "type": "Callable[[float], float]"},
        "x": {"description": "x", "type": "List[Union[int, float]]"},
        "flag": {"description": "b", "type": "bool, optional", "default": "false"},
        "s": {"description": "s", "type": "set"},
    }}
    out = D.normalize_xlam_tool(bare)
    p = out["parameters"]
    assert p["type"] == "object"
    assert p["properties"]["type"] == {"type": "string", "description": "word type", "default": "adjective"}
    assert p["properties"]["count"] == {"type": "integer", "description": "n"}
    assert p["properties"]["ids"]["type"] == "array" and p["properties"]["ids"]["items"] == {"type": "integer"}
    assert p["properties"]["pairs"] == {"type": "array", "items": {"type": "array", "items": {"type": "number"}},
                                        "description": "p"}
    assert p["properties"]["meta"]["type"] == "object"
    assert p["properties"]["user"]["type"] == "string"
    assert p["properties"]["fn"]["type"] == "string"
    assert p["properties"]["x"]["items"] == {"type": "number"}
    assert p["properties"]["flag"] == {"type": "boolean", "description": "b", "default": "false"}
    assert p["properties"]["s"]["type"] == "array"
    # required: no ", optional", no default in the type, no "default" key
    assert p["required"] == ["count", "pairs", "meta", "fn", "x", "s"]
    assert out["name"] == "getrandomword" and out["description"] == "d"

    wrapped = {"name": "f", "parameters": {"type": "dict", "properties": {
        "a": {"type": "float"}, "b": {"type": "int, optional", "default": 3}}}}
    assert D.normalize_xlam_tool(wrapped)["parameters"] == {
        "type": "object", "properties": {"a": {"type": "number"}, "b": {"type": "integer", "default": 3}},
        "required": ["a"]}
    explicit = {"name": "g", "parameters": {"type": "object", "properties": {"a": {"type": "string"}},
                                            "required": []}}
    assert D.normalize_xlam_tool(explicit)["parameters"]["required"] == []
    assert D.normalize_xlam_tool({"name": "h", "parameters": {}})["parameters"] == {
        "type": "object", "properties": {}, "required": []}
    assert bare["parameters"]["count"] == {"description": "n", "type": "int"}  # input not mutated


def test_xlam_string_arguments_are_parsed():
    assert D._parse_call({"name": "f", "arguments": '{"a": 1}'}) == {"name": "f", "arguments": {"a": 1}}
    assert D._parse_call({"name": "f", "arguments": "not json"})["arguments"] == "not json"


def test_xlam_split_is_deterministic_and_disjoint(real_data):
    rows = D.load_xlam()
    train, val = D.xlam_split(rows)
    train2, val2 = D.xlam_split(rows)
    assert [r["id"] for r in train] == [r["id"] for r in train2] and [r["id"] for r in val] == [r["id"] for r in val2]
    ids_t, ids_v = {r["id"] for r in train}, {r["id"] for r in val}
    assert not ids_t & ids_v and ids_t | ids_v == {r["id"] for r in rows}
    assert 60 < len(val) < 150  # about 10% of 1024
    # membership depends only on the id: same sides after reversing and after dropping rows
    rev_t, rev_v = D.xlam_split(rows[::-1])
    assert {r["id"] for r in rev_v} == ids_v
    _, half_v = D.xlam_split(rows[:500])
    assert {r["id"] for r in half_v} == ids_v & {r["id"] for r in rows[:500]}
    # the seed changes the split
    assert {r["id"] for r in D.xlam_split(rows, seed=1)[1]} != ids_v


def test_xlam_split_edges():
    rows = [{"id": f"r{i}"} for i in range(50)]
    assert D.xlam_split(rows, val_fraction=0.0) == (rows, [])
    assert D.xlam_split(rows, val_fraction=1.0) == ([], rows)
    with pytest.raises(ValueError):
        D.xlam_split(rows, val_fraction=1.5)


def _tool_row(i, names):
    return {"id": f"r{i}", "messages": [{"role": "user", "content": f"question {i}"}],
            "tools": [{"name": n, "description": "", "parameters": {}} for n in names], "ground_truth": [{"name": names[0], "arguments": {}}]}


def test_no_call_negatives_pair_questions_with_foreign_tools():
    rows = [_tool_row(i, [f"t{i % 3}", "shared" if i % 2 else f"u{i}"]) for i in range(30)]
    negs = D.no_call_negatives(rows, 12, seed=0)
    assert len(negs) == 12
    by_id = {r["id"]: r for r in rows}
    for neg in negs:
        q_id, _, t_id = neg["id"].partition("~no-call~")
        src, donor = by_id[q_id], by_id[t_id]
        assert q_id != t_id and neg["messages"] == src["messages"] and neg["tools"] == donor["tools"]
        assert not {t["name"] for t in src["tools"]} & {t["name"] for t in neg["tools"]}
        assert neg["ground_truth"] == [] and neg["answer_text"] == D.NO_CALL_REPLY
    assert len({n["id"].partition("~")[0] for n in negs}) == 12  # each question at most once
    assert negs == D.no_call_negatives(rows, 12, seed=0)
    assert negs != D.no_call_negatives(rows, 12, seed=1)
    assert D.no_call_negatives(rows, 0) == []
    with pytest.raises(ValueError):
        D.no_call_negatives(rows, -1)


def test_no_call_negatives_never_pair_overlapping_tools():
    # every row shares the tool "common": no negative is possible, whatever n asks for
    rows = [_tool_row(i, ["common", f"x{i}"]) for i in range(10)]
    assert D.no_call_negatives(rows, 5) == []


def test_no_call_negatives_train_on_reply(real_data):
    from helpers import models, sft
    train, _ = D.xlam_split(D.load_xlam(), seed=0)
    negs = D.no_call_negatives(train, 40, seed=0)
    assert len(negs) == 40
    tok = models.load_tokenizer("embedded:SmolLM2-135M-Instruct")
    ex = sft.tool_call_example(negs[0], tok, desc_chars=80)
    assert ex["completion"] == D.NO_CALL_REPLY and "<tool_call>" not in ex["completion"]


def test_toolrl(real_data):
    sft = D.load_toolrl_sft()
    assert len(sft) == 400
    assert all(set(r) == {"instruction", "input", "output"} for r in sft)
    assert all("<tool_call>" in r["output"] or "<response>" in r["output"] for r in sft)
    test = D.load_toolrl_test()
    assert len(test) == 80
    for r in test:
        assert r["data_source"] == "rlla"
        assert isinstance(r["prompt"], list) and [m["role"] for m in r["prompt"]] == ["system", "user"]
        assert isinstance(r["reward_model"]["ground_truth"], str)
    json.dumps(test)  # plain Python objects, no numpy arrays


TOOLRL_INSTRUCTION = """You are a helpful assistant.

**Available Tools**
In your response, you can use the following tools:
1. Name: Get Weather
Description: Weather for a city.
Parameters: {"city": {"description": "City name", "type": "str", "default": ""}, "units": {"description": "Units", "type": "str", "default": "metric"}}
2. Name: add
Description: Adds two numbers.
Parameters: {"a": {"description": "first", "type": "int", "default": ""}, "b": {"description": "second", "type": "float, optional", "default": ""}}

**Steps for Each Turn**
1. Think."""


def _toolrl_row(inp, out, instruction=TOOLRL_INSTRUCTION):
    return {"instruction": instruction, "input": inp, "output": out}


def test_toolrl_rows_parse_tools_calls_and_replies():
    rows = D.toolrl_rows([
        _toolrl_row("**Dialogue Records History**\n<user> Weather in Oslo and 2+3? </user>",
                    '<think> two calls </think>\n<tool_call>\n{"name": "Get Weather", "parameters": {"city": "Oslo"}}\n'
                    '{"name": "add", "parameters": {"a": 2, "b": 3}}\n</tool_call>'),
        _toolrl_row("**Dialogue Records History**\n<user> Weather? </user>",
                    "<think> no city </think>\n<response> Which city? </response>"),
        # multi-turn history, broken call JSON, no tool list, nothing to learn, an unlisted tool: all left out
        _toolrl_row("<user> hi </user>\n<assistant> hello </assistant>\n<user> weather? </user>", "<response> x </response>"),
        _toolrl_row("<user> add </user>", '<tool_call>\n{"name": "add", "parameters": {"a": 1\n</tool_call>'),
        _toolrl_row("<user> add </user>", "<response> x </response>", instruction="no tools here"),
        _toolrl_row("<user> add </user>", "<think> hmm </think>"),
        _toolrl_row("<user> add </user>", '<tool_call>\n{"name": "mul", "parameters": {"a": 1}}\n</tool_call>'),
    ])
    assert [r["id"] for r in rows] == ["toolrl-0", "toolrl-1"]
    calls, reply = rows
    assert calls["messages"] == [{"role": "user", "content": "Weather in Oslo and 2+3?"}]
    assert calls["ground_truth"] == [{"name": "Get Weather", "arguments": {"city": "Oslo"}},
                                     {"name": "add", "arguments": {"a": 2, "b": 3}}]
    assert calls["answer_text"] is None
    weather, add = calls["tools"]
    assert weather["name"] == "Get Weather" and weather["description"] == "Weather for a city."
    assert weather["parameters"]["properties"]["city"] == {"type": "string", "description": "City name"}  # "" is no default
    assert weather["parameters"]["properties"]["units"]["default"] == "metric"
    assert add["parameters"]["properties"]["b"]["type"] == "number"
    assert weather["parameters"]["required"] == add["parameters"]["required"] == []
    assert reply["ground_truth"] == [] and reply["answer_text"] == "Which city?"


def test_toolrl_rows_real(real_data):
    rows = D.toolrl_rows(D.load_toolrl_sft())
    assert 300 <= len(rows) <= 400
    counts = [len(r["ground_truth"]) for r in rows]
    assert counts.count(0) > 10 and sum(c > 1 for c in counts) > 100  # what xLAM's rows lack
    for r in rows:
        names = {t["name"] for t in r["tools"]}
        assert all(isinstance(c["arguments"], dict) for c in r["ground_truth"])
        assert r["ground_truth"] or r["answer_text"]
        assert all(c["name"] in names for c in r["ground_truth"])


def test_wayuunaiki_dev(real_data):
    rows = D.load_wayuunaiki("dev")
    assert len(rows) == 6635
    assert collections.Counter(r["source"] for r in rows) == DEV_SOURCES
    assert [r["line"] for r in rows] == list(range(6635))
    assert all(r["es"].strip() and r["guc"].strip() for r in rows)
    assert rows[0] == {"es": "se me empezaron a quitar las ganas de fumar",
                       "guc": "nnojoluitpa suchuntaain taa'in akamüjaa", "source": "dictionary", "line": 0}
    assert len({(r["es"], r["guc"]) for r in rows}) == 6635  # no duplicate pairs


def test_wayuunaiki_train_source_counts(real_data):
    lines = D._read_lines(D.locate("wayuunaiki/train.source"))
    assert len(lines) == 59715
    assert collections.Counter(lines) == TRAIN_SOURCES


def test_wayuunaiki_train_missing_names_files_urls_and_blobs(real_data, tmp_path, monkeypatch):
    folder = D.data_dir()
    if folder and (folder / "wayuunaiki/train.es").exists():
        pytest.skip("this data folder has train.es; the missing-train message cannot be shown")
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "cache"))
    with pytest.raises(D.DataMissingError) as err:
        D.load_wayuunaiki("train")
    msg = str(err.value)
    files = D.manifest()
    for rel in ("wayuunaiki/train.es", "wayuunaiki/train.guc"):
        assert rel in msg and files[rel]["url"] in msg and files[rel]["git_blob_sha1"] in msg
    assert "train.source" not in msg  # that one is present
    assert msg.startswith("2 data file(s) not found")


def test_wayuunaiki_rejects_test_split():
    with pytest.raises(ValueError, match="test"):
        D.load_wayuunaiki("test")


# -----------------------------------------------------------------------------
# lookup order, missing data, checksums


def test_repo_root_and_shared_default(monkeypatch):
    assert (D.repo_root() / "helpers" / "data.py").is_file()
    monkeypatch.delenv(D.DATA_ENV, raising=False)
    shared = (D.repo_root() / ".." / "shared" / "data").resolve()
    assert D.data_dir() == (shared if shared.is_dir() else None)


def test_cache_dir_env(monkeypatch, tmp_path):
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path))
    assert D.cache_dir() == tmp_path / "data"
    monkeypatch.delenv(D.CACHE_ENV)
    assert D.cache_dir() == Path("~/.cache/tiny-rl-workbook/data").expanduser()


def test_downloads_allowed(monkeypatch):
    monkeypatch.setenv(D.NO_DOWNLOAD_ENV, "1")
    assert not D.downloads_allowed() and D.downloads_allowed(True)
    monkeypatch.delenv(D.NO_DOWNLOAD_ENV)
    assert D.downloads_allowed() and not D.downloads_allowed(False)


def test_tinyrl_data_override_with_fake_layout(tmp_path, monkeypatch, use_manifest):
    folder = tmp_path / "mydata"
    entries = write_layout(folder, {"bfcl/BFCL_v3_simple.json": bfcl_lines(FAKE_Q),
                                    "bfcl/possible_answer/BFCL_v3_simple.json": bfcl_lines(FAKE_A),
                                    "wayuunaiki/dev.es": b"hola\nagua\n", "wayuunaiki/dev.guc": b"jamaya\nwuin\n",
                                    "wayuunaiki/dev.source": b"dictionary\nbooks\n"})
    use_manifest(entries)
    monkeypatch.setenv(D.DATA_ENV, str(folder))
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "cache"))
    assert D.data_dir() == folder.resolve()
    assert D.locate("bfcl/BFCL_v3_simple.json") == folder.resolve() / "bfcl/BFCL_v3_simple.json"
    rows = D.load_bfcl("simple")
    assert rows == [{"id": "simple_0", "question": [{"role": "user", "content": "q0"}], "functions": FAKE_Q[0]["function"],
                     "ground_truth": [{"f": {"x": [0]}}]},
                    {"id": "simple_1", "question": [{"role": "user", "content": "q1"}], "functions": FAKE_Q[1]["function"],
                     "ground_truth": [{"f": {"x": [1]}}]}]
    assert D.load_wayuunaiki() == [{"es": "hola", "guc": "jamaya", "source": "dictionary", "line": 0},
                                   {"es": "agua", "guc": "wuin", "source": "books", "line": 1}]
    summary = D.check_all()
    assert summary["ok"] and summary["data_dir"] == str(folder.resolve()) and len(summary["present"]) == 5


def test_tinyrl_data_override_with_real_manifest(real_data, tmp_path, monkeypatch):
    rel = "toolrl_rlla_4k/test.parquet"
    src = Path(real_data["present"][rel])
    (tmp_path / "toolrl_rlla_4k").mkdir()
    shutil.copy(src, tmp_path / rel)
    monkeypatch.setenv(D.DATA_ENV, str(tmp_path))
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "cache"))
    assert D.locate(rel) == tmp_path.resolve() / rel
    assert len(D.load_toolrl_test()) == 80
    with pytest.raises(D.DataMissingError):  # the override does not fall back to the shared folder
        D.locate("toolrl_rlla_4k/rlla_sft.json")


def test_tinyrl_data_must_be_a_folder(tmp_path, monkeypatch):
    monkeypatch.setenv(D.DATA_ENV, str(tmp_path / "nope"))
    with pytest.raises(D.DataMissingError, match="TINYRL_DATA"):
        D.data_dir()


def test_cache_is_searched_after_data_dir(tmp_path, monkeypatch, use_manifest):
    cache = tmp_path / "cache"
    entries = write_layout(cache / "data", {"wayuunaiki/dev.es": b"x\n"})
    use_manifest(entries)
    (tmp_path / "empty").mkdir()
    monkeypatch.setenv(D.DATA_ENV, str(tmp_path / "empty"))
    monkeypatch.setenv(D.CACHE_ENV, str(cache))
    assert D.locate("wayuunaiki/dev.es") == cache / "data" / "wayuunaiki/dev.es"


def test_missing_data_lists_every_file_and_url(empty_dirs):
    files = D.manifest()
    with pytest.raises(D.DataMissingError) as err:
        D.require(list(files))
    msg = str(err.value)
    assert msg.startswith(f"{len(files)} data file(s) not found")
    for rel, e in files.items():
        assert f"  - {rel}  " in msg and e["url"] in msg
    assert D.DATA_ENV in msg and "download=True" in msg and str(empty_dirs[1]) in msg
    assert isinstance(err.value, FileNotFoundError)


def test_loader_reports_all_its_missing_files_at_once(empty_dirs):
    with pytest.raises(D.DataMissingError) as err:
        D.load_bfcl("parallel")
    msg = str(err.value)
    assert msg.startswith("2 data file(s) not found")
    assert "bfcl/BFCL_v3_parallel.json" in msg and "bfcl/possible_answer/BFCL_v3_parallel.json" in msg


def test_check_all_reports_missing_and_bad(tmp_path, monkeypatch, use_manifest):
    folder = tmp_path / "d"
    entries = write_layout(folder, {"wayuunaiki/dev.es": b"a\n", "wayuunaiki/dev.guc": b"b\n"})
    entries["wayuunaiki/dev.source"] = fake_entry("wayuunaiki/dev.source", b"dictionary\n")
    entries["wayuunaiki/train.es"] = dict(fake_entry("wayuunaiki/train.es", b"t\n", blob_only=True), optional=True)
    (folder / "wayuunaiki/dev.guc").write_bytes(b"c\n")  # same size, different bytes
    use_manifest(entries)
    monkeypatch.setenv(D.DATA_ENV, str(folder))
    monkeypatch.setenv(D.CACHE_ENV, str(tmp_path / "cache"))
    s = D.check_all()
    assert list(s["present"]) == ["wayuunaiki/dev.es"]
    assert s["missing"] == ["wayuunaiki/dev.source"] and s["missing_optional"] == ["wayuunaiki/train.es"]
    assert list(s["bad"]) == ["wayuunaiki/dev.guc"] and "sha256" in s["bad"]["wayuunaiki/dev.guc"]
    assert not s["ok"]


def test_checksum_mismatch_raises(real_data, tmp_path):
    rel = "wayuunaiki/dev.source"
    entry = D.manifest()[rel]
    copy = tmp_path / "dev.source"
    content = bytearray(Path(real_data["present"][rel]).read_bytes())
    D.verify(Path(real_data["present"][rel]), entry)
    content[100] ^= 1  # one byte changed, size unchanged
    copy.write_bytes(bytes(content))
    with pytest.raises(D.ChecksumError, match="sha256") as err:
        D.verify(copy, entry)
    assert entry["url"] in str(err.value)
    copy.write_bytes(bytes(content[:-1]))
    with pytest.raises(D.ChecksumError, match="size"):
        D.verify(copy, entry)


def test_checksum_mismatch_in_data_folder_is_not_hidden(tmp_path, monkeypatch, use_manifest):
    folder = tmp_path / "d"
    entries = write_layout(folder, {"wayuunaiki/dev.es": b"hola\n"})
    (folder / "wayuunaiki/dev.es").write_bytes(b"hoLa\n")
    use_manifest(entries)
    monkeypatch.setenv(D.DATA_ENV, str(folder))
    with pytest.raises(D.ChecksumError):
        D.locate("wayuunaiki/dev.es", download=True)  # a bad local file is an error, not a cue to download


def test_verify_with_git_blob_only(tmp_path):
    path = tmp_path / "train.es"
    path.write_bytes(b"hello\n")
    entry = {"path": "wayuunaiki/train.es", "url": "u", "size": None, "sha256": None,
             "git_blob_sha1": "ce013625030ba8dba906f756967f9e9ca394464a"}
    D.verify(path, entry)
    path.write_bytes(b"hellO\n")
    with pytest.raises(D.ChecksumError, match="git_blob_sha1"):
        D.verify(path, entry)
    with pytest.raises(ValueError, match="neither"):
        D.verify(path, {"path": "x", "sha256": None, "git_blob_sha1": None})


def test_bfcl_id_mismatch_is_a_clear_error(tmp_path, monkeypatch, use_manifest):
    answers = FAKE_A[:1] + [{"id": "simple_7", "ground_truth": []}]
    entries = write_layout(tmp_path / "d", {"bfcl/BFCL_v3_simple.json": bfcl_lines(FAKE_Q),
                                            "bfcl/possible_answer/BFCL_v3_simple.json": bfcl_lines(answers)})
    use_manifest(entries)
    monkeypatch.setenv(D.DATA_ENV, str(tmp_path / "d"))
    with pytest.raises(ValueError, match=r"ids do not match.*simple_1.*simple_7"):
        D.load_bfcl("simple")


# -----------------------------------------------------------------------------
# downloads (served from memory)


class MemoryHandler(urllib.request.BaseHandler):
    """Answers https:// requests from a dict url -> bytes (404 for anything else) and records them."""

    def __init__(self, served: dict[str, bytes]):
        self.served, self.requests = served, []

    def https_open(self, req):
        url = req.full_url
        self.requests.append((url, req.get_header("User-agent"), req.timeout))
        headers = email.message.Message()
        if url not in self.served:
            raise urllib.error.HTTPError(url, 404, "Not Found", headers, io.BytesIO(b"404"))
        response = urllib.response.addinfourl(io.BytesIO(self.served[url]), headers, url, code=200)
        response.msg = "OK"  # what http.client sets; HTTPErrorProcessor reads it
        return response


@pytest.fixture
def serve(monkeypatch):
    """Install an opener that serves the given bytes; urllib.request.urlopen then never opens a socket."""
    def install(served: dict[str, bytes]) -> MemoryHandler:
        handler = MemoryHandler(served)
        opener = urllib.request.OpenerDirector()
        opener.add_handler(handler)
        opener.add_handler(urllib.request.HTTPErrorProcessor())
        opener.add_handler(urllib.request.HTTPDefaultErrorHandler())
        monkeypatch.setattr(urllib.request, "_opener", opener)
        return handler
    return install


def leftovers(folder: Path) -> list[str]:
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.exists() else []


def test_download_verifies_and_writes_atomically(empty_dirs, use_manifest, serve):
    _, cache = empty_dirs
    content = b"es uno\nes dos\n"
    entry = fake_entry("wayuunaiki/dev.es", content)
    use_manifest({"wayuunaiki/dev.es": entry})
    handler = serve({entry["url"]: content})
    path = D.locate("wayuunaiki/dev.es", download=True)
    assert path == cache / "wayuunaiki/dev.es" and path.read_bytes() == content
    assert leftovers(cache) == ["wayuunaiki/dev.es"]  # no *.part file left behind
    assert handler.requests == [(entry["url"], D.USER_AGENT, D.DOWNLOAD_TIMEOUT_S)]
    assert D.locate("wayuunaiki/dev.es", download=True) == path and len(handler.requests) == 1  # cached now


def test_download_by_env_default(empty_dirs, use_manifest, serve, monkeypatch):
    content = b"x\n"
    entry = fake_entry("wayuunaiki/dev.es", content)
    use_manifest({"wayuunaiki/dev.es": entry})
    handler = serve({entry["url"]: content})
    with pytest.raises(D.DataMissingError):
        D.locate("wayuunaiki/dev.es")  # TINYRL_NO_DOWNLOAD=1 (autouse fixture)
    assert handler.requests == []
    monkeypatch.delenv(D.NO_DOWNLOAD_ENV)
    assert D.locate("wayuunaiki/dev.es").read_bytes() == content


def test_download_checksum_failure_deletes_the_file(empty_dirs, use_manifest, serve):
    _, cache = empty_dirs
    entry = fake_entry("wayuunaiki/dev.es", b"right\n")
    use_manifest({"wayuunaiki/dev.es": entry})
    serve({entry["url"]: b"wrong\n"})
    with pytest.raises(D.ChecksumError, match="deleted") as err:
        D.locate("wayuunaiki/dev.es", download=True)
    assert entry["url"] in str(err.value)
    assert leftovers(cache) == []


def test_download_too_large_is_cut_off_and_deleted(empty_dirs, use_manifest, serve):
    _, cache = empty_dirs
    entry = fake_entry("wayuunaiki/dev.es", b"abc")
    use_manifest({"wayuunaiki/dev.es": entry})
    serve({entry["url"]: b"abc" * 100_000})
    with pytest.raises(D.ChecksumError, match="more than the expected 3 bytes"):
        D.locate("wayuunaiki/dev.es", download=True)
    assert leftovers(cache) == []


def test_download_git_blob_only_entry(empty_dirs, use_manifest, serve):
    _, cache = empty_dirs
    entry = fake_entry("wayuunaiki/train.es", b"hello\n", blob_only=True)
    assert entry["git_blob_sha1"] == "ce013625030ba8dba906f756967f9e9ca394464a"
    use_manifest({"wayuunaiki/train.es": entry})
    serve({entry["url"]: b"hello\n"})
    assert D.locate("wayuunaiki/train.es", download=True).read_bytes() == b"hello\n"
    (cache / "wayuunaiki/train.es").unlink()
    serve({entry["url"]: b"hello!\n"})
    with pytest.raises(D.ChecksumError, match="git_blob_sha1"):
        D.locate("wayuunaiki/train.es", download=True)
    assert leftovers(cache) == []


def test_download_http_error_becomes_one_missing_message(empty_dirs, use_manifest, serve):
    _, cache = empty_dirs
    good, bad = fake_entry("wayuunaiki/dev.es", b"a\n"), fake_entry("wayuunaiki/dev.guc", b"b\n")
    use_manifest({"wayuunaiki/dev.es": good, "wayuunaiki/dev.guc": bad})
    serve({good["url"]: b"a\n"})  # dev.guc -> 404
    with pytest.raises(D.DataMissingError) as err:
        D.require(["wayuunaiki/dev.es", "wayuunaiki/dev.guc"], download=True)
    msg = str(err.value)
    assert msg.startswith("1 data file(s) not found") and bad["url"] in msg and "404" in msg
    assert leftovers(cache) == ["wayuunaiki/dev.es"]  # the good one was still fetched


def test_real_manifest_download_path(real_data, empty_dirs, serve):
    """The real manifest's URL and checksum for one file, with the bytes served from the local copy."""
    rel = "bfcl/possible_answer/BFCL_v3_multiple.json"
    entry = D.manifest()[rel]
    content = Path(real_data["present"][rel]).read_bytes()
    handler = serve({entry["url"]: content})
    path = D.locate(rel, download=True)
    assert path == empty_dirs[1] / rel and path.read_bytes() == content
    assert handler.requests[0][0].startswith("https://raw.githubusercontent.com/ShishirPatil/gorilla/cd9429cc")
