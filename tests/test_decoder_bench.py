"""bench/decoder_bench.py on the tiny Llama (hidden 64): the whole benchmark loop (sparsify,
logits checks, timing calls, CSV, meta, RESULTS.md section), the cache paths' checks, and a
wrong sparse model caught. On the CPU (interpreter) the times mean nothing; with
SPARSERT_TEST_DEVICE=cuda the same run must time the decode step as a CUDA graph."""
import json
import os

import pytest
import torch

pytest.importorskip("transformers")

from bench import decoder_bench as db  # noqa: E402

DEVICE = os.environ.get("SPARSERT_TEST_DEVICE", "cpu")


def _tokens(batch=2, prompt=8, prefill=12):
    g = torch.Generator().manual_seed(3)
    return {k: torch.randint(128, s, generator=g).to(DEVICE) for k, s in
            (("prompt", (batch, prompt)), ("next", (batch, db.CHECK_STEPS)),
             ("prefill", (1, prefill)))}


@pytest.mark.parametrize("cache", ["static", "dynamic"])
def test_cached_decode_matches_a_cache_free_forward_and_repeats(cache):
    """The dense system's check: cached decode steps equal the forward pass without a cache,
    a step after the rewind equals the first; the timed calls leave the cache where it was
    (two calls give the same logits as one) and, with a static cache, read nothing on the
    host (a host read would stop the CUDA graph capture on the GPU)."""
    model = db.build_model("tiny", 2, torch.float16, DEVICE, 32)
    s = db.System("dense", model, db.Runner(model, cache), _tokens())
    assert s.run.kind == cache
    with torch.no_grad():
        out = s.check_decode(2, db.TOLERANCE["float16"])
        assert out["decode"].shape == (2, db.CHECK_STEPS, 128)
        step = s.decode_call(2)
        if cache == "static" and DEVICE == "cpu":
            assert db.host_reads(step) == []
            assert db.host_reads(s.prefill_call()) == []
        step()
        step()
        assert db.host_reads(lambda: torch.ones(2).sum().item())    # the spy sees reads
        # a cache not rewound moves on: the check would see the shifted positions
        cache_obj, _ = s.decoded(2)
        s.run.forward(s.tokens["next"][:, :1], cache_obj, 8)
        again = s.run.forward(s.tokens["next"][:, :1], cache_obj, 8)
        assert db.rel_err(again, out["decode"][:, :1]) > 1e-3


def test_smoke_run_writes_checked_rows_meta_and_section(tmp_path):
    """The benchmark end to end on the tiny model: every Linear of the decoder sparse, the
    logits within tolerance, one dense and one sparse row per (phase, batch, method), the
    meta file and the RESULTS.md section from them."""
    out = tmp_path / "decoder.csv"
    said = []
    info = db.run("tiny", 1, ["float16"], [0.7], [2], 6, 10, out, device=DEVICE,
                  log=said.append)
    assert info["mismatches"] == [] and info["skipped"] == [] and info["sparse_layers"] == 7
    assert info["cache"] == "static"
    rows = db.read_csv(out)
    assert list(rows[0]) == db.COLUMNS
    methods = ["eager"] if DEVICE == "cpu" else ["graph", "eager"]
    got = [(r["phase"], r["batch"], r["system"], r["method"]) for r in rows]
    assert got == [(p, b, s, m) for p, b in (("decode", "2"), ("prefill", "1"))
                   for s in ("dense", "sparse") for m in methods]
    for r in rows:
        assert float(r["median_us"]) > 0
        if r["system"] == "sparse":
            assert float(r["logits_rel_err"]) < db.TOLERANCE["float16"]
            assert float(r["ratio_vs_dense"]) > 0
    assert [(r["context"], r["tokens"]) for r in rows if r["phase"] == "prefill"][0] == ("0", "10")
    db.write_csv(out, rows)
    meta = {"device": {"name": "NVIDIA H100 80GB HBM3", "capability": "sm_90"},
            "versions": {"torch": "2.11.0"}, "args": {"prune_lm_head": False},
            "prompt": 6, "prefill": 10}
    out.with_suffix(".meta.json").write_text(json.dumps(meta))
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nkept\n")
    db.report(out, tmp_path)
    db.report(out, tmp_path)                     # rewritten in place, once
    text = md.read_text()
    assert text.count(db.BEGIN) == 1 and "kept" in text and "NVIDIA H100" in text
    assert "after a 6-token prompt" in text and "prefill: 10 tokens" in text
    d, s = [float(r["median_us"]) for r in rows if r["method"] == methods[0]][:2]
    assert f"| float16 | 70% | decode | 2 | {d:.1f} | {s:.1f} | {d / s:.2f}x" in text


def test_a_wrong_sparse_model_is_a_mismatch(tmp_path, monkeypatch):
    """A sparse model whose values differ from the dense weights fails the logits check: the
    case is listed, not timed, and main's exit status would be 1."""
    import sparsert_triton.nn as snn
    real = snn.sparsify

    def corrupted(model, **kw):
        model, report = real(model, **kw)
        with torch.no_grad():
            model.model.layers[0].mlp.down_proj.values.mul_(3.0)
        return model, report

    monkeypatch.setattr(snn, "sparsify", corrupted)
    info = db.run("tiny", 1, ["float16"], [0.7], [], 4, 6, tmp_path / "d.csv", device=DEVICE,
                  log=lambda s: None, phases=["prefill"])
    assert len(info["mismatches"]) == 1 and info["rows"] == []
    assert "sparse logits differ from dense" in info["mismatches"][0]


def test_deadline_skips_and_lists(tmp_path):
    info = db.run("tiny", 1, ["float16"], [0.5, 0.9], [1], 4, 6, tmp_path / "d.csv",
                  device=DEVICE, deadline=db.Deadline(-1.0), log=lambda s: None)
    assert info["rows"] == [] and info["skipped"] == ["float16 sparsity 0.5",
                                                      "float16 sparsity 0.9"]


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="cache must be"):
        db.Runner(db.build_model("tiny", 1, torch.float32, "cpu", 8), "paged")
    with pytest.raises(ValueError, match="model must be"):
        db.build_model("llama9", 1, torch.float32, "cpu", 8)
    with pytest.raises(ValueError, match="phases must be"):
        db.run("tiny", 1, ["float16"], [0.5], [1], 4, 6, None, device="cpu", phases=["decoding"])
    with pytest.raises(ValueError, match="dtype must be"):
        db.run("tiny", 1, ["float64"], [0.5], [1], 4, 6, None, device="cpu")
    with pytest.raises(SystemExit, match="--out: no CSV at"):
        db.main(["--report", "--out", "/nonexistent/decoder.csv"])
    with pytest.raises(SystemExit, match="--dtype"):
        db.main(["--smoke", "--dtype", "bfloat16"])
