"""MDS sources: MosaicML Streaming shards (written here byte by byte from the format's specification) read
without mosaicml-streaming, as text or as token ids the store keeps without tokenizing again."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import synthetic_documents
from mds_shards import shard_bytes, write_mds

from modeling.common.errors import DataError
from modeling.common.skips import SkipLog
from modeling.data.sources import SourceSpec, iter_documents, iter_records, resolve_files
from modeling.data.sources.mds import TokenIds
from modeling.data.store import Store, prepare_store

FRACTION = 0.05


def test_the_writer_gives_the_bytes_the_format_specifies():
    """The worked example of mosaicml/streaming's MDS layout: lengths of the variable columns first, then the
    columns in name order; `ndarray` with a dtype code and a shape header, `ndarray:uint32` with the shape only."""
    columns = {"text": "str", "input_ids": "ndarray:uint32", "n": "int", "arr": "ndarray", "fixed": "ndarray:int16:2"}
    sample = {
        "arr": np.arange(6, dtype=np.int64).reshape(2, 3),
        "fixed": np.array([-1, 5], np.int16),
        "input_ids": np.array([1, 2, 3], np.uint32),
        "n": 7,
        "text": "hi",
    }
    data = shard_bytes([sample], columns, config={})
    expected = bytes.fromhex(
        "34000000 0e000000 02000000"
        "41 08 02 03" + "".join(f"{i:02x}00000000000000" for i in range(6)) + "ffff 0500"
        "04 03 010000000200000003000000"
        "0700000000000000"
        "6869"
    )
    header = 4 + 4 * 2 + len(b"{}")
    assert data[:4] == b"\x01\x00\x00\x00"
    assert np.frombuffer(data[4:12], "<u4").tolist() == [header, header + len(expected)]
    assert data[header:] == expected


def test_text_shards_read_in_index_order_and_name_each_sample(tmp_path):
    docs = synthetic_documents(250, seed=4)
    write_mds(tmp_path / "mds", [{"id": str(i), "text": d} for i, d in enumerate(docs)], {"id": "str", "text": "str"})
    spec = SourceSpec("notes", str(tmp_path / "mds"), format="mds")
    assert [p.rsplit("/", 1)[1] for p in resolve_files(spec)] == [f"shard.0000{i}.mds" for i in range(3)]
    records = list(iter_records(spec, SkipLog()))
    assert [text for _, text in records] == docs
    assert records[101][0] == f"{tmp_path}/mds/shard.00001.mds#sample 1"


@pytest.mark.parametrize("compression", ["zstd", "zstd:7", "gz"])
def test_compressed_shards_and_a_merged_index_of_subfolders(tmp_path, compression):
    """MDSWriter leaves only shard.NNNNN.mds.zstd when it compresses; merge_index lists SUBFOLDER/shard... ."""
    docs = synthetic_documents(120, seed=5)
    root = tmp_path / "merged"
    shards = []
    for part, chunk in enumerate((docs[:70], docs[70:])):
        write_mds(root / f"part_{part:02d}", [{"text": d} for d in chunk], {"text": "str"}, compression, 50)
        for shard in json.loads((root / f"part_{part:02d}" / "index.json").read_text())["shards"]:
            for info in ("raw_data", "zip_data"):
                shard[info]["basename"] = f"part_{part:02d}/{shard[info]['basename']}"
            shards.append(shard)
        (root / f"part_{part:02d}" / "index.json").unlink()  # the merged index alone lists them
    (root / "index.json").write_text(json.dumps({"version": 2, "shards": shards}))
    assert not list(root.rglob("*.mds"))
    spec = SourceSpec("notes", str(root), format="mds")
    assert list(iter_documents(spec, SkipLog())) == docs


def test_a_zstd_frame_without_its_content_size_is_read(tmp_path):
    import zstandard

    docs = synthetic_documents(30, seed=6)
    folder = write_mds(tmp_path / "mds", [{"text": d} for d in docs], {"text": "str"}, "zstd")
    shard = folder / "shard.00000.mds.zstd"
    raw = zstandard.ZstdDecompressor().decompress(shard.read_bytes())
    compressor = zstandard.ZstdCompressor(write_content_size=False)
    shard.write_bytes(compressor.compress(raw))
    assert zstandard.get_frame_parameters(shard.read_bytes()).content_size == zstandard.CONTENTSIZE_UNKNOWN
    assert list(iter_documents(SourceSpec("notes", str(folder), format="mds"), SkipLog())) == docs


def _token_samples(tokenizer, docs, encoding):
    """ModernBERT's tokenized MDS: each document's ids with [CLS] and [SEP], int64 from return_tensors="np"."""
    samples = []
    for i, doc in enumerate(docs):
        ids = np.asarray(tokenizer(doc)["input_ids"], np.int64)
        value = ids.tobytes() if encoding == "bytes" else ids
        samples.append({"id": str(i), "input_ids": value, "attention_mask": np.ones_like(ids)})
    return samples


@pytest.mark.parametrize("encoding", ["ndarray", "ndarray:uint32", "ndarray:uint16", "bytes"])
def test_token_id_shards_enter_the_store_as_the_same_ids_text_would_give(tmp_path, tiny_tokenizer, encoding):
    """The store from tokenized MDS equals, shard for shard, the store from the same documents as JSONL text:
    same ids (never tokenized again), same held-out split, same text keys."""
    docs = synthetic_documents(300, seed=7)
    columns = {"id": "str", "input_ids": encoding, "attention_mask": "ndarray"}
    write_mds(tmp_path / "mds", _token_samples(tiny_tokenizer, docs, encoding), columns, "zstd", samples_per_shard=128)
    assert_same_store_as_text(tmp_path, tiny_tokenizer, SourceSpec("notes", str(tmp_path / "mds"), format="mds"), docs)
    with pytest.raises(DataError, match="holds token ids, not text"):
        list(iter_documents(SourceSpec("notes", str(tmp_path / "mds"), format="mds"), SkipLog()))


def assert_same_store_as_text(tmp_path, tokenizer, spec, docs):
    """The store prepared from `spec` equals, shard for shard, the store from `docs` as JSONL text."""
    (tmp_path / "docs.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))
    stores = {}
    for name, source in (("mds", spec), ("jsonl", SourceSpec(spec.name, str(tmp_path / "docs.jsonl")))):
        tokenizer.save_pretrained(tmp_path / name / "tokenizer")
        prepare_store(tmp_path / name, [source], FRACTION, part_bytes=1 << 30)
        stores[name] = Store(tmp_path / name)
    for split in ("train", "held_out"):
        mds, jsonl = stores["mds"].split(spec.name, split), stores["jsonl"].split(spec.name, split)
        assert len(mds) == len(jsonl) > 0
        assert [mds.tokens(d).tolist() for d in range(len(mds))] == [
            jsonl.tokens(d).tolist() for d in range(len(jsonl))
        ]
        assert np.array_equal(mds.text_keys(), jsonl.text_keys())
    return stores


def test_concatenated_token_streams_become_whole_documents_again(tmp_path, tiny_tokenizer):
    """ModernBERT's older converter (and llm-foundry's): every document's ids with [CLS] and [SEP], concatenated
    and cut every 64 ids, int64 bytes in a `tokens` column; cuts fall inside documents and across shards."""
    docs = synthetic_documents(200, seed=11)
    stream = [i for d in docs for i in tiny_tokenizer(d)["input_ids"]]
    chunks = [np.asarray(stream[i : i + 64], np.int64).tobytes() for i in range(0, len(stream), 64)]
    write_mds(tmp_path / "mds", [{"tokens": c} for c in chunks], {"tokens": "bytes"}, "zstd", samples_per_shard=50)
    assert len(chunks) > 100
    spec = SourceSpec("notes", str(tmp_path / "mds"), format="mds")
    stores = assert_same_store_as_text(tmp_path, tiny_tokenizer, spec, docs)
    split = stores["mds"].split("notes")
    specials = {tiny_tokenizer.cls_token_id, tiny_tokenizer.sep_token_id}
    assert not any(specials & set(split.tokens(d).tolist()) for d in range(len(split)))


def _prepare(tmp_path, tokenizer, spec):
    tokenizer.save_pretrained(tmp_path / "store" / "tokenizer")
    prepare_store(tmp_path / "store", [spec], FRACTION, part_bytes=1 << 30)


def test_ids_of_another_tokenizer_are_refused(tmp_path, tiny_tokenizer):
    docs = synthetic_documents(40, seed=8)
    rng = np.random.default_rng(0)
    shuffled = rng.permutation(len(tiny_tokenizer))  # in range, but another tokenizer's meaning
    samples = [{"input_ids": shuffled[np.asarray(tiny_tokenizer(d)["input_ids"])]} for d in docs]
    write_mds(tmp_path / "mds", samples, {"input_ids": "ndarray"})
    spec = SourceSpec("notes", str(tmp_path / "mds"), format="mds")
    with pytest.raises(DataError, match=r"do not look like the store tokenizer's \(\d+ of the first 16"):
        _prepare(tmp_path, tiny_tokenizer, spec)
    write_mds(tmp_path / "big", [{"input_ids": np.array([5, 70000])}], {"input_ids": "ndarray"})
    spec = SourceSpec("notes", str(tmp_path / "big"), format="mds")
    with pytest.raises(DataError, match=r"shard.00000.mds#sample 0: token id 70000 is outside"):
        _prepare(tmp_path / "b", tiny_tokenizer, spec)


def test_damaged_shards_and_indexes_are_named(tmp_path):
    docs = synthetic_documents(20, seed=9)
    folder = write_mds(tmp_path / "mds", [{"text": d} for d in docs], {"text": "str"}, "zstd")
    spec = SourceSpec("notes", str(folder), format="mds")
    shard = folder / "shard.00000.mds.zstd"
    good = shard.read_bytes()
    shard.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="shard.00000.mds.zstd: cannot decompress it as zstd"):
        list(iter_documents(spec, SkipLog()))
    shard.unlink()
    with pytest.raises(DataError, match=r"index.json: shard 0 \(shard.00000.mds.zstd or shard.00000.mds\) is missing"):
        resolve_files(spec)

    raw = write_mds(tmp_path / "raw", [{"text": d} for d in docs], {"text": "str"})
    (raw / "shard.00000.mds").write_bytes((raw / "shard.00000.mds").read_bytes()[:-10])
    with pytest.raises(DataError, match="index says .* \\(damaged or truncated\\)"):
        list(iter_documents(SourceSpec("notes", str(raw), format="mds"), SkipLog()))

    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="has no index.json"):
        resolve_files(SourceSpec("notes", str(tmp_path / "empty"), format="mds"))
    nested = write_mds(tmp_path / "nested" / "train", [{"text": "a b"}], {"text": "str"})
    with pytest.raises(DataError, match=f"e.g. {nested}/index.json"):
        resolve_files(SourceSpec("notes", str(tmp_path / "nested"), format="mds"))
    (tmp_path / "v1").mkdir()
    (tmp_path / "v1" / "index.json").write_text(json.dumps({"version": 1, "shards": []}))
    with pytest.raises(DataError, match="not an MDS index of version 2"):
        resolve_files(SourceSpec("notes", str(tmp_path / "v1"), format="mds"))


def test_columns_that_hold_neither_text_nor_ids_and_bad_records(tmp_path):
    folder = write_mds(tmp_path / "mds", [{"meta": {"a": 1}, "body": "x"}], {"meta": "json", "body": "str"})
    with pytest.raises(DataError, match=r"none of the columns text, input_ids, tokens \(columns: body, meta\)"):
        list(iter_documents(SourceSpec("notes", str(folder), format="mds"), SkipLog()))
    assert list(iter_documents(SourceSpec("notes", str(folder), format="mds", text_column="body"), SkipLog())) == ["x"]
    with pytest.raises(DataError, match="encoded as 'json', not text"):
        list(iter_documents(SourceSpec("notes", str(folder), format="mds", text_column="meta"), SkipLog()))

    samples = [{"text": "fine"}, {"text": b"\xffbad"}, {"text": ""}, {"text": "also fine"}]
    folder = write_mds(tmp_path / "bad", samples, {"text": "str"})
    with pytest.raises(DataError, match=r"shard.00000.mds#sample 1: column 'text': not valid UTF-8"):
        list(iter_documents(SourceSpec("notes", str(folder), format="mds"), SkipLog()))
    skips = SkipLog(quiet=True)
    spec = SourceSpec("notes", str(folder), format="mds", on_bad_record="skip")
    assert list(iter_documents(spec, skips)) == ["fine", "also fine"]
    assert skips.as_dict()["notes"] == {"bad record": 1, "empty document": 1}


def test_token_ids_keep_their_type_until_the_store(tmp_path, tiny_tokenizer):
    ids = np.asarray(tiny_tokenizer("insulin twice daily")["input_ids"])
    folder = write_mds(tmp_path / "mds", [{"tokens": ids.astype(np.int64).tobytes()}], {"tokens": "bytes"})
    [(where, document)] = list(iter_records(SourceSpec("n", str(folder), format="mds"), SkipLog(), token_ids=True))
    assert isinstance(document, TokenIds) and document.ids.tolist() == ids.tolist()
