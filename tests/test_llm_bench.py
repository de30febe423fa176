"""bench/llm_bench.py on the CPU: masks, L2 rotation, the geomean table and RESULTS.md section
(the timing itself needs a GPU)."""
import torch

from bench import llm_bench as lb


def test_masks_have_the_asked_sparsity():
    W = lb.pruned_weight(64, 200, 0.7, "per_row", torch.float16, "cpu")
    assert ((W != 0).sum(dim=1) == 60).all()
    U = lb.pruned_weight(64, 200, 0.7, "uniform", torch.float32, "cpu")
    assert abs((U == 0).float().mean().item() - 0.7) < 0.03


def test_rotation_exceeds_l2_twice():
    assert lb.copies(200e6) == 1
    assert lb.copies(30e6) == 5 and lb.copies(1e3) == 8


def _rows():
    rows = []
    for layer, us in (("a", 10.0), ("b", 40.0)):
        for system, t in (("dense", us), ("sparsert_default", us / 2), ("table", us * 2)):
            rows.append(dict(layer=layer, M=8, K=8, N=1, sparsity=0.9, mask="uniform",
                             dtype="float16", system=system, median_us=t, compile_s=0.0,
                             schedule=""))
    return rows


def test_speedups_and_section(tmp_path):
    rows = _rows()
    assert lb.speedups(rows, "sparsert_default") == {(1, 0.9, "float16"): 2.0}
    assert lb.speedups(rows, "table")[(1, 0.9, "float16")] == 0.5
    csv = tmp_path / "llm.csv"
    lb.write_csv(csv, rows)
    back = lb.read_csv(csv)
    assert list(back[0]) == lb.COLUMNS and back[1]["median_us"] == 5.0
    md = tmp_path / "RESULTS.md"
    md.write_text("# Results\n\nkept\n")
    lb.write_marked(md, lb.markdown(back, csv.name, "p.png"))
    lb.write_marked(md, lb.markdown(back, csv.name, "p.png"))   # rewritten, once
    text = md.read_text()
    assert text.count(lb.BEGIN) == 1 and "kept" in text
    assert "| 1 | 90% | float16 | 2.00x | 0.50x |" in text
    # the default against each other system on the cases both ran (here the table: 4x faster)
    assert lb.paired(back, "sparsert_default", "table") == (2, 0.25, 0.25)
    assert "- `sparsert_default` / `table`: 0.25x over 2 cases (worst 0.25x)" in text


def test_paired_ignores_cases_one_system_lacks():
    rows = _rows() + [dict(_rows()[0], N=4, system="sparsert_default", median_us=4.0)]
    assert lb.paired(rows, "sparsert_default", "table")[0] == 2
    assert lb.paired(rows, "sparsert_default", "sparsert") == (0, None, None)


def test_run_checks_and_writes_every_system_on_the_cpu(tmp_path):
    """The whole loop on the interpreter (tiny layer): every system checked against float64
    and written with the CSV's columns (semi24 needs a GPU: skipped with a message)."""
    out = tmp_path / "llm.csv"
    said = []
    rows = lb.run(["tiny"], [1, 65], [0.5], ["float16"], ["per_row"],
                  list(lb.SYSTEMS), out, log=said.append, device="cpu")
    assert [r["system"] for r in rows] == ["dense", "sparsert_default", "sparsert", "table",
                                           "expand"] * 2
    assert all(r["schedule"].startswith("Schedule(mode='expand'") for r in rows
               if r["system"] == "expand")
    modes = [r["schedule"].split("'")[1] for r in rows if r["system"] == "sparsert_default"]
    assert modes == ["blocks", "table"]          # 2400 nonzeros: blocks at N <= 64 only
    # the tuner's pick (its untimed heuristic on the CPU) is the default's plan here
    tuned = [r["schedule"] for r in rows if r["system"] == "sparsert"]
    assert tuned == [r["schedule"] for r in rows if r["system"] == "sparsert_default"]
    assert all(r["compile_s"] >= 0 for r in rows if r["system"] == "sparsert")
    assert [list(r) for r in lb.read_csv(out)][0] == lb.COLUMNS


def test_rotated_copies_keep_the_weights_dtype():
    """Every copy is the same kernel on the same dtype (copies made from the float64 CSR values
    became float64 kernels: 4x the value bytes, float64 arithmetic, a slower average)."""
    from dsl import Schedule
    from sparsert_triton.weights import as_sparse_weight
    w = as_sparse_weight(lb.pruned_weight(16, 64, 0.5, "uniform", torch.bfloat16, "cpu"))
    ks = lb._sparse_kernels(w, Schedule(mode="blocks"), 1e3)
    assert len(ks) == 8 and {k.weight.dtype for k in ks} == {"bfloat16"}
    assert all((k.weight.values == w.values).all() for k in ks)


def test_the_section_names_the_device_of_the_run(tmp_path):
    """A run's meta file (written beside the CSV) gives the section its device and versions;
    without one the section says the device was not recorded."""
    import json
    csv = tmp_path / "llm.csv"
    lb.write_csv(csv, _rows())
    csv.with_suffix(".meta.json").write_text(json.dumps({
        "device": {"name": "NVIDIA H200", "capability": "sm_90"},
        "versions": {"torch": "2.11.0", "triton": "3.6.0"}, "started": "2026-12-05 20:00:00"}))
    lb.report(csv, tmp_path)
    text = (tmp_path / "RESULTS.md").read_text()
    assert "Device: NVIDIA H200 (sm_90), torch 2.11.0, triton 3.6.0, 2026-12-05." in text
    assert "Device: not recorded." in lb.markdown(_rows(), "x.csv", "p.png")
