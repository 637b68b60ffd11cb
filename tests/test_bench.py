"""CPU tests of the benchmark harness: FLOP counting, density, checks, plans, output writing."""

from __future__ import annotations

import json
import math

import pytest
import torch

from bench import anchors, cli, flops, report
from bench.check import check_output, check_rows
from bench.peers import IMPLS, flex_column_mask_mod, make_impls
from bench.report import Row
from bench.runner import Collector, _Acc
from bench.suite import SEEDED_MASKS, Case, batch_for, build_cases, fmt_len, parse_len
from bench.timing import Timing, reps_for, warmup_calls
from fm4.masks.registry import make_mask, mask_names


# ----------------------------------------------------------------------------- FLOPs
def test_flops_conventions():
    # 2 products of 2 FLOPs per multiply-add, D = Dv = 128: 512 FLOPs per visible pair.
    assert flops.fwd_flops_per_pair(128) == 512
    assert flops.flops(10, 128, "fwd") == 5120
    assert flops.flops(10, 128, "bwd") == 2.5 * 5120
    assert flops.flops(10, 128, "fwd+bwd") == 3.5 * 5120
    with pytest.raises(ValueError, match="direction"):
        flops.direction_factor("sideways")


def test_tflops_matches_the_anchor_convention():
    # Anchor row: causal 8K, FA4 mask_mod, density 0.5078125, 14.3378 ms -> 623.08 TFLOP/s.
    w = flops.MaskWork(16, 32, 8192, 8192, 128, density=0.5078125, visible_pairs=1)
    assert w.tflops_block("fwd", 14.337759971618652) == pytest.approx(623.077, rel=1e-4)
    assert w.tflops_block("fwd+bwd", 57.23468780517578) == pytest.approx(546.301, rel=1e-4)
    assert math.isnan(flops.tflops_per_s(1e12, 0.0))


def test_mask_work_density_and_exact_pairs():
    s = 512
    causal = make_mask("causal", s)
    w = flops.mask_work(causal, batch=2, heads=4, head_dim=64)
    assert w.visible_pairs == 2 * 4 * s * (s + 1) // 2  # exact lower triangle
    mt = s // 128
    assert w.density == pytest.approx((mt * (mt + 1) / 2) / mt**2)  # diagonal tiles count
    assert w.flops_exact("fwd") == w.visible_pairs * 4 * 64
    assert w.flops_block("fwd") >= w.flops_exact("fwd")
    full = flops.mask_work(make_mask("full", s), batch=3, heads=2, head_dim=64)
    assert full.density == 1.0 and full.visible_fraction == 1.0


def test_mask_work_per_head_mask():
    m = make_mask("random_eviction", 256, batch=2, num_heads=4)
    w = flops.mask_work(m, batch=2, heads=4, head_dim=32)
    dense = m.to_dense()  # [B, H, S, S]
    assert w.visible_pairs == int(dense.sum())


# ----------------------------------------------------------------------------- suite and plans
def test_suite_configuration():
    assert parse_len("8K") == 8192 and parse_len("128k") == 131072 and parse_len("1000") == 1000
    assert fmt_len(32768) == "32K"
    assert [batch_for(s) for s in (8192, 32768, 131072)] == [16, 4, 1]
    cases = build_cases([(8192, ["causal", "document"])], head_dims=[128], gqa=True, splits=5)
    assert [c.mask for c in cases].count("document") == 5
    assert [c.mask for c in cases].count("causal") == 1
    assert all(c.kv_heads == 8 and c.heads == 32 for c in cases)
    assert "document" in SEEDED_MASKS
    with pytest.raises(ValueError, match="unknown mask"):
        build_cases([(8192, ["nope"])], head_dims=[128])


def test_plans_from_flags():
    p = cli.build_parser()
    plan, dirs, impls, splits = cli.make_plan(p.parse_args([]))
    assert plan == cli.DEFAULT_PLAN and splits == 1 and "fa4_mask_mod" in impls
    assert set(cli.ALL_MASKS) == set(mask_names())
    plan, dirs, impls, splits = cli.make_plan(p.parse_args(["--quick"]))
    assert plan == cli.QUICK_PLAN and dirs[8192] == ["fwd"]
    args = p.parse_args(
        [
            "--masks",
            "causal",
            "--seqlens",
            "8K,32K",
            "--directions",
            "bwd",
            "--impls",
            "all",
            "--splits",
            "3",
        ]
    )
    plan, dirs, impls, splits = cli.make_plan(args)
    assert plan == [(8192, ["causal"]), (32768, ["causal"])]
    assert dirs == {8192: ["bwd"], 32768: ["bwd"]} and impls == cli.ALL_IMPLS and splits == 3
    assert set(cli.ALL_IMPLS) == set(IMPLS)
    with pytest.raises(ValueError, match="unknown implementation"):
        make_impls(["nope"], torch.device("cpu"))


def test_impls_skip_with_reasons_on_cpu():
    for impl in make_impls(cli.ALL_IMPLS, torch.device("cpu")):
        ok, why = impl.available()
        assert not ok and why  # nothing runs on the CPU, and each says why
    dense = IMPLS["fa4_dense"](torch.device("cpu"))
    assert dense.applies(Case("document", 8192, 16, 32, 32, 128))[0] is False
    assert dense.applies(Case("causal", 8192, 16, 32, 32, 128))[0] is True


def test_timing_reps():
    assert reps_for(10.0, min_reps=3, max_reps=20, target_ms=300) == 20
    assert reps_for(100.0, min_reps=3, max_reps=20, target_ms=300) == 3
    assert reps_for(1000.0, min_reps=3, max_reps=20, target_ms=300) == 3
    t = Timing([3.0, 1.0, 2.0])
    assert t.median_ms == 2.0 and t.spread == pytest.approx(1.0)


def test_time_cuda_queues_timed_calls_behind_untimed_ones(monkeypatch):
    """No host synchronisation between the warm-up by time and the timed calls, the sizing call
    is not among the results, and the counts follow warmup_ms / target_ms."""
    import bench.timing as timing

    trace: list[str] = []

    class FakeEvent:
        def __init__(self, enable_timing=False):
            self.at = None

        def record(self):
            trace.append("record")
            self.at = sum(1 for t in trace if t == "run")

        def elapsed_time(self, other):
            return 10.0 * (other.at - self.at)  # every call takes 10 ms

    monkeypatch.setattr(timing.torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(timing.torch.cuda, "synchronize", lambda: trace.append("sync"))
    t = timing.time_cuda(
        lambda: trace.append("run"), warmup=2, warmup_ms=50.0, max_reps=100, target_ms=80.0
    )
    assert t.times_ms == [10.0] * 8
    syncs = [i for i, x in enumerate(trace) if x == "sync"]
    assert len(syncs) == 2  # after the sizing call, and at the end
    between = trace[syncs[0] + 1 : syncs[1]]
    assert between[:5] == ["run"] * 5  # 50 ms of untimed calls, queued first
    assert between[5:] == ["record", "run", "record"] * 8
    assert trace[: syncs[0]] == ["run", "run", "record", "run", "record"]
    # warmup_ms = 0 still queues one untimed call ahead of the timed ones
    trace.clear()
    timing.time_cuda(lambda: trace.append("run"), warmup=0, min_reps=3, max_reps=3)
    first_sync = trace.index("sync")
    assert trace[first_sync + 1 : first_sync + 3] == ["run", "record"]


def test_warmup_calls_fill_the_warmup_time():
    assert warmup_calls(2.5, 0.0) == 0  # off
    assert warmup_calls(2.5, 100.0) == 40
    assert warmup_calls(30.0, 100.0) == 4  # rounds up: at least warmup_ms
    assert warmup_calls(300.0, 100.0) == 1
    assert warmup_calls(0.001, 100.0) == 2000  # capped
    assert warmup_calls(0.0, 100.0) == 2000


# ----------------------------------------------------------------------------- masks and checks
@pytest.mark.parametrize("name", [n for n in mask_names() if n != "full"])
def test_flex_mask_mod_matches_the_dense_mask(name):
    from torch.nn.attention.flex_attention import create_mask

    m = make_mask(name, 256, batch=2, num_heads=4, seed=3)
    sri = m.startend_row_indices
    mm = flex_column_mask_mod(sri, m.causal, 256, 256)
    b = 1 if sri is None else sri.shape[0]
    h = 1 if sri is None else sri.shape[1]
    got = create_mask(mm, b, h, 256, 256, device="cpu")
    assert torch.equal(got, m.to_dense(256).expand_as(got))


def _inputs(mask_name, s=256, h=4, hkv=2, d=32):
    q = torch.randn(1, s, h, d, dtype=torch.bfloat16)
    k = torch.randn(1, s, hkv, d, dtype=torch.bfloat16)
    v = torch.randn(1, s, hkv, d, dtype=torch.bfloat16)
    return q, k, v, make_mask(mask_name, s, batch=1, num_heads=h)


@pytest.mark.parametrize("name", ["causal", "document", "global_sliding_window", "random_eviction"])
def test_check_accepts_a_right_output_and_rejects_wrong_ones(name):
    import fm4

    q, k, v, mask = _inputs(name)
    out = fm4.attention(q, k, v, mask)  # the CPU runs fm4's reference
    res = check_output(out, q, k, v, mask, rows_per_group=32)
    assert res.ok, res.describe()
    assert not check_output(fm4.attention(q, k, v, None), q, k, v, mask, rows_per_group=32).ok
    bad = out.clone()
    bad[0, -1] = float("nan")
    assert not check_output(bad, q, k, v, mask, rows_per_group=32).ok


def test_check_rows():
    r = check_rows(1000, 128)
    assert r[0] == 0 and r[-1] == 999 and len(r) == 384
    assert len(check_rows(100, 128)) == 100


# ----------------------------------------------------------------------------- output writing
def _fake_rows() -> list[Row]:
    """Rows as the collector makes them, from fake timings."""
    c = Collector()
    w = flops.MaskWork(16, 32, 8192, 8192, 128, density=0.25, visible_pairs=10**12)
    case = Case("document", 8192, 16, 32, 32, 128, seed=0)
    case1 = Case("document", 8192, 16, 32, 32, 128, seed=1)
    for cs, scale in ((case, 1.0), (case1, 1.2)):
        c.add(cs, "fa4_mask_mod", "fwd", Timing([10.0 * scale] * 3), w)
        c.add(cs, "flex", "fwd", Timing([20.0 * scale, 21.0 * scale, 19.0 * scale]), w)
    c.skip(case, "fm4", ["fwd"], "kernels have not landed", w)
    c.skip(case, "fa4_dense", ["fwd"], "dense kernel: full and causal only", w)
    return c.rows()


def test_collector_merges_splits_and_fills_speedups():
    rows = {r.impl: r for r in _fake_rows()}
    assert rows["fa4_mask_mod"].ms == pytest.approx(11.0) and rows["fa4_mask_mod"].splits == 2
    assert rows["flex"].ms == pytest.approx(22.0)
    assert rows["flex"].speedup == pytest.approx(0.5)
    assert rows["fa4_mask_mod"].speedup == pytest.approx(1.0)
    expect = 0.25 * 16 * 32 * 8192**2 * 512 / 11e-3 / 1e12
    assert rows["fa4_mask_mod"].tflops_block == pytest.approx(expect)
    assert rows["fm4"].status == "skipped" and "landed" in rows["fm4"].reason
    assert rows["fm4"].density == 0.25


def test_skipped_row_from_acc():
    a = _Acc(Case("causal", 8192, 16, 32, 32, 128), "fm4", "fwd", skips=["why", "why"])
    r = a.row()
    assert r.status == "skipped" and r.reason == "why" and math.isnan(r.ms)


def test_table_csv_json_round_trip(tmp_path):
    rows = _fake_rows()
    lines = report.table_lines(rows)
    assert lines[0].split()[0] == "mask" and len(lines) == 2 + 2  # header, rule, 2 timed rows
    assert any("flex" in x and "0.50" in x for x in lines)
    md = report.table_lines(rows, markdown=True)
    assert md[0].startswith("| mask") and len(md) == 4
    sk = report.skipped_lines(rows)
    assert any(s.startswith("fm4: skipped (kernels have not landed)") for s in sk)
    meta = report.run_metadata({"plan": "fake"}, argv=["bench", "--quick"])
    assert meta["command"] == "python -m bench --quick" and "torch" in meta["versions"]
    paths = report.write_all(str(tmp_path), rows, meta)
    with open(paths["json"]) as f:
        data = json.load(f)  # valid JSON: NaN written as null
    assert data["meta"]["config"] == {"plan": "fake"} and len(data["rows"]) == len(rows)
    _, rows2 = report.read_json(paths["json"])
    assert [r.impl for r in rows2] == [r.impl for r in rows]
    assert rows2[0].ms == rows[0].ms and math.isnan(rows2[-1].ms)
    csv_text = (tmp_path / "results.csv").read_text().splitlines()
    assert csv_text[0].startswith("mask,seqlen") and len(csv_text) == 1 + len(rows)
    assert "fm4: skipped" in (tmp_path / "table.md").read_text()


def test_plots_written(tmp_path):
    pytest.importorskip("matplotlib")
    from bench.plots import write_plots

    rows = _fake_rows()
    for m in ("causal", "sliding_window"):  # a radar needs three masks
        for r in [r for r in rows if r.status == "ok"]:
            rows.append(Row(**{**r.__dict__, "mask": m}))
    written = write_plots(rows, str(tmp_path))
    names = sorted(p.split("/")[-1] for p in written)
    assert names == ["radar_8K.png", "speedup_fwd.png"]
    assert all((tmp_path / n).stat().st_size > 1000 for n in names)


def test_anchor_comparison(tmp_path):
    path = tmp_path / "anchors.json"
    path.write_text(
        json.dumps(
            [
                {
                    "mask": "document",
                    "impl": "fa4_mask_mod",
                    "S": 8192,
                    "fwd_ms": 12.0,
                    "fwdbwd_ms": 40.0,
                    "density": 0.30,
                },
                {"mask": "document", "impl": "flex", "S": 8192, "fwd_ms": 22.0, "density": 0.25},
            ]
        )
    )
    rows = _fake_rows()
    cmps = {c.row.impl: c for c in anchors.compare(rows, anchors.load_anchors(str(path)))}
    mm, fx = cmps["fa4_mask_mod"], cmps["flex"]
    assert mm.ratio == pytest.approx(11 / 12) and not mm.same_mask
    assert mm.norm_ratio == pytest.approx(11 / 12 * 0.30 / 0.25) and mm.judged == mm.norm_ratio
    assert fx.same_mask and fx.judged == pytest.approx(1.0)
    lines = anchors.compare_lines(rows, str(path))
    assert "per tile" in lines[1] and "outside" in lines[-1]
    assert anchors.compare_lines(rows, str(tmp_path / "missing.json")) == []


def test_cpu_demo_runs(tmp_path, capsys):
    from bench.cpu_demo import run_cpu_demo

    assert run_cpu_demo(str(tmp_path), seqlen=128, heads=2, head_dim=16) == 0
    out = capsys.readouterr().out
    assert "global_sliding_window" in out and (tmp_path / "masks" / "causal.png").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU path")
def test_main_without_gpu_runs_the_demo(tmp_path, capsys, monkeypatch):
    import bench.cpu_demo as demo

    called = {}

    def fake_demo(out):
        called["out"] = out
        return 0

    monkeypatch.setattr(demo, "run_cpu_demo", fake_demo)
    assert cli.main(["--out", str(tmp_path)]) == 0
    assert "No CUDA GPU" in capsys.readouterr().out and called["out"] == str(tmp_path)


# ----------------------------------------------------------------------------- run loop
def test_run_case_interleaves_rounds(monkeypatch):
    """Every implementation is checked before any is timed; timing runs in rotated rounds and
    a row's times are those of all its rounds; a peer failing while timed becomes a skip."""
    import bench.runner as runner
    from bench.peers import Impl

    calls = []

    class Fake(Impl):
        def __init__(self, name, fail_timing=False):
            super().__init__(torch.device("cpu"))
            self.name = name
            self.fail_timing = fail_timing

        def prepare(self, inp):
            def fn():
                calls.append(("call", self.name))
                return torch.zeros(1)

            return fn

    def fake_time(fn, inp, direction, **kw):
        # target 300 ms split over 3 rounds; the warm-up is per round, not split
        assert kw == {"target_ms": 100.0, "warmup_ms": 100.0}
        fn()
        name = calls[-1][1]
        if name == "c" and ("time", "c", direction) in calls:  # c's second round fails
            raise RuntimeError("boom")
        calls.append(("time", name, direction))
        return Timing([1.0, 2.0])

    class FakeInputs:
        def __init__(self):
            self.mask = self.q = self.k = self.v = self.dout = None
            self.shared = {}

        def zero_grad(self):
            pass

    monkeypatch.setattr(runner, "make_inputs", lambda case, device: FakeInputs())
    monkeypatch.setattr(
        runner, "mask_work", lambda *a: flops.MaskWork(1, 1, 128, 128, 64, 1.0, 8256)
    )
    monkeypatch.setattr(runner, "first_call_s", lambda fn: (fn(), 0.0)[1])
    monkeypatch.setattr(runner, "time_direction", fake_time)
    col = Collector()
    case = Case("causal", 256, 1, 2, 2, 64)
    impls = [Fake("a"), Fake("b"), Fake("c")]
    runner.run_case(
        case,
        impls,
        ["fwd"],
        col,
        device=torch.device("cpu"),
        check=False,
        log=lambda s: None,
        timing_kw={"target_ms": 300.0, "warmup_ms": 100.0},
        rounds=3,
    )
    timed = [c[1] for c in calls if c[0] == "time"]
    first_time = next(i for i, c in enumerate(calls) if c[0] == "time")
    assert {c[1] for c in calls[:first_time] if c[0] == "call"} == {"a", "b", "c"}
    # round 1: a, b, c; round 2 (rotated): b, c fails, a; round 3: c skipped, a, b
    assert timed == ["a", "b", "c", "b", "a", "a", "b"]
    rows = {r.impl: r for r in col.rows()}
    assert rows["a"].status == "ok" and rows["a"].ms == 1.5
    assert rows["c"].status == "skipped" and "boom" in rows["c"].reason


@pytest.mark.parametrize(
    "name, partial, full",
    [
        ("causal_n1_clean", 16, 136 - 16),
        ("causal_n2_clean", 16, 136 - 16),
        ("full_n2_clean", 0, 256),
        ("causal_n1_allpartial", 136, 0),
        ("causal_n2_allpartial", 136, 0),
        ("full_n2_allpartial", 256, 0),
        ("bd_4", 0, 64),
        ("bd_4_p", 64, 0),
        ("bd_2_p", 32, 0),
    ],
)
def test_tile_cost_synthetic_masks(name, partial, full):
    """bench.tile_cost's synthetic masks visit the tiles its docstring says (S = 2048: 16 x 16
    tiles of 128)."""
    from bench.tile_cost import synthetic
    from fm4.masks.tiles import build_tile_lists

    causal, sri = synthetic(name, 2048, torch.device("cpu"))
    tl = build_tile_lists(sri[None, None], causal, 2048, 2048, 128, 128, backward=False)
    assert tl.fwd_partial_cnt.sum().item() == partial
    assert tl.fwd_full_cnt.sum().item() == full
    if name.startswith("bd_"):  # every m_block has exactly K tiles
        k = int(name.split("_")[1])
        assert (tl.fwd_partial_cnt + tl.fwd_full_cnt).eq(k).all()


def test_tile_cost_dense_bwd_tiles_match_the_lists():
    """``bench.tile_cost --direction bwd`` counts the tiles of causal / full without bounds by a
    formula: it must agree with the backward lists of the same masks written as bounds."""
    from bench.tile_cost import dense_bwd_tiles, synthetic
    from fm4.masks.tiles import build_tile_lists

    S = 1024
    for name, causal in (("causal_n1_clean", True), ("full_n2_clean", False)):
        c, sri = synthetic(name, S, "cpu")
        assert c == causal
        tl = build_tile_lists(sri[None, None].contiguous(), c, S, S, 64, 128, backward=True)
        visited = (tl.bwd_partial_cnt.sum() + tl.bwd_full_cnt.sum()).item()
        cols = ((tl.bwd_partial_cnt + tl.bwd_full_cnt) > 0).sum().item()
        assert dense_bwd_tiles(causal, S, 64, 128) == (
            visited,
            tl.bwd_partial_cnt.sum().item(),
            cols,
        )


def test_merge_runs(tmp_path):
    from bench.merge import main as merge_main
    from bench.merge import merge_runs

    meta = report.run_metadata({"plan": "fake"}, argv=["bench", "--seqlens", "8K"])
    rows = _fake_rows()
    other = [Row(**{**r.__dict__, "seqlen": 32768}) for r in rows]
    meta2 = {**meta, "command": "python -m bench --seqlens 32K"}
    merged_meta, merged = merge_runs([(meta, rows), (meta2, other)])
    assert len(merged) == 2 * len(rows) and len(merged_meta["merged_from"]) == 2
    assert merged_meta["command"] == "python -m bench --seqlens 8K + python -m bench --seqlens 32K"
    with pytest.raises(ValueError, match="is in run 0 and run 1"):
        merge_runs([(meta, rows), (meta2, rows)])
    with pytest.raises(ValueError, match="device"):
        merge_runs([(meta, rows), ({**meta2, "device": {"name": "other"}}, other)])
    a, b = tmp_path / "a", tmp_path / "b"
    report.write_all(str(a), rows, meta)
    report.write_all(str(b), other, meta2)
    assert merge_main([str(a), str(b), "--out", str(tmp_path / "m"), "--no-plots"]) == 0
    _, back = report.read_json(str(tmp_path / "m" / "results.json"))
    assert sorted({r.seqlen for r in back}) == [8192, 32768]
    assert merge_main([str(a), str(tmp_path / "none"), "--out", str(tmp_path / "x")]) == 2


def test_kernel_times_totals_per_step():
    from bench.kernel_times import format_totals, kernel_totals

    events = [("main", 3000.0), ("post", 500.0), ("main", 3200.0), ("post", 520.0), ("tiny", 1.0)]
    rows = kernel_totals(events, steps=2)
    assert [r[0] for r in rows] == ["main", "post", "tiny"]
    assert rows[0][1] == pytest.approx(3.1) and rows[0][2] == 1
    assert rows[1][1] == pytest.approx(0.51)
    text = format_totals("causal 8192 fm4", rows)
    assert text.splitlines()[0] == "== causal 8192 fm4: total 3.61 ms per step"
    assert "tiny" not in text  # below MIN_SHOWN_MS, still in the total
    with pytest.raises(ValueError, match="steps=0"):
        kernel_totals(events, steps=0)


def test_summary_tables_and_headline():
    from bench import summary
    from bench.report import Row

    def row(mask, impl, direction, ms, seqlen=8192):
        return Row(
            mask,
            seqlen,
            16,
            32,
            32,
            128,
            impl,
            direction,
            "ok",
            ms=ms,
            tflops_block=100.0,
            density=0.5,
        )

    rows = [
        row("full", "fm4", "fwd", 10.0),
        row("full", "fa4_dense", "fwd", 11.0),
        row("causal", "fm4", "fwd", 5.0),
        row("causal", "fa4_mask_mod", "fwd", 6.0),
        row("causal", "fa4_dense", "fwd", 5.5),
        row("document", "fm4", "fwd", 4.0),
        row("document", "fa4_mask_mod", "fwd", 3.0),
        Row("document", 8192, 16, 32, 32, 128, "flex", "fwd", "skipped", reason="x"),
    ]
    sp = summary.speedups(rows, 8192, "fwd")
    assert sp == {"causal": 6.0 / 5.0, "document": 3.0 / 4.0}
    head = "\n".join(summary.headline(rows))
    assert f"geometric mean {math.sqrt(1.2 * 0.75):.4f} over 2 masks" in head
    assert "full: fm4 / FA4 dense 1.100" in head
    assert "lowest row against FA4 mask_mod: document 8K fwd 0.750" in head
    table = summary.readme_table(rows)
    assert table[2].startswith("| full | 0.500 | 10.00 (100) | - | 1.10x (vs FA4 dense 11.00")
    assert "| document | 0.500 | 4.00 (100) | 3.00 (100) | 0.75x |" in table[4]
    assert len(summary.long_table(rows)) == 2 + 3


def test_git_commit_override(monkeypatch):
    """FM4_GIT_COMMIT names the tree when the checkout's .git is not its own."""
    from bench.report import git_commit

    monkeypatch.setenv("FM4_GIT_COMMIT", "abc1234")
    assert git_commit() == "abc1234"
    monkeypatch.delenv("FM4_GIT_COMMIT")
    assert git_commit() != "abc1234"
