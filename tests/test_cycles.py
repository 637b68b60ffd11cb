"""bench.cycles: the ncu CSV is cut into profiled calls at each spin_kernel, labelled in order."""

import pytest

from bench.cycles import parse, table

HEAD = '"ID","Kernel Name","Metric Name","Metric Unit","Metric Value"'


def _rows(kernels: list[tuple[str, float]]) -> list[str]:
    out = []
    for i, (name, cyc) in enumerate(kernels):
        out.append(f'"{i}","{name}","sm__cycles_elapsed.max","cycle","{cyc:,.0f}"')
        out.append(f'"{i}","{name}","gpu__time_duration.sum","ns","{cyc / 1.7:,.0f}"')
    return out


def _text(kernels, segs):
    seg_lines = [f"SEG\t{c}\t{i}" for c, i in segs]
    return "\n".join(["==PROF== Connected", *seg_lines, HEAD, *_rows(kernels)]) + "\n"


SPIN = "cuda::<unnamed>::spin_kernel(long)"


def test_parse_cuts_at_spin_kernels_and_sums_each_call():
    kernels = [
        (SPIN, 1e3),
        ("fill", 2e3),  # fm4: tile counter + forward
        ("kernel_fm4_fwd", 20_000_000),
        (SPIN, 1e3),
        ("kernel_flash_attn_fwd", 21_000_000),
        (SPIN, 1e3),
        ("kernel_fm4_fwd", 4_000_000),
        (SPIN, 1e3),
        ("kernel_flash_attn_fwd", 6_000_000),
    ]
    segs = [
        ("causal@8192", "fm4"),
        ("causal@8192", "fa4_mask_mod"),
        ("sliding_window@8192", "fm4"),
        ("sliding_window@8192", "fa4_mask_mod"),
    ]
    got = parse(_text(kernels, segs))
    assert [(s.case, s.impl, len(s.kernels)) for s in got] == [
        ("causal@8192", "fm4", 2),
        ("causal@8192", "fa4_mask_mod", 1),
        ("sliding_window@8192", "fm4", 1),
        ("sliding_window@8192", "fa4_mask_mod", 1),
    ]
    assert got[0].total() == 20_002_000  # thousands separators parsed, kernels summed
    md = table(got)
    assert "| causal@8192 | 20.00 | 21.00 | 1.050 |" in md
    assert "| sliding_window@8192 | 4.00 | 6.00 | 1.500 |" in md
    # geometric mean of 1.05 and 1.5
    assert f"{(1.05 * 1.5) ** 0.5:.3f}" in md


def test_parse_rejects_mismatched_labels():
    kernels = [(SPIN, 1e3), ("k", 1e6), (SPIN, 1e3), ("k", 1e6)]
    with pytest.raises(ValueError, match="2 profiled segments but 1 SEG lines"):
        parse(_text(kernels, [("full@8192", "fm4")]))


def test_parse_rejects_kernels_before_the_first_marker():
    with pytest.raises(ValueError, match="before the first spin_kernel"):
        parse(_text([("k", 1e6), (SPIN, 1e3)], [("full@8192", "fm4")]))


def test_variants_table_is_relative_to_the_first_variant():
    kernels = [(SPIN, 1), ("k", 10e6), (SPIN, 1), ("k", 10.3e6), (SPIN, 1), ("k", 9.9e6)]
    segs = [("causal@8192", "default"), ("causal@8192", "lpt"), ("causal@8192", "default")]
    md = table(parse(_text(kernels, segs)))
    # default: median of 10.0 and 9.9 = 9.95
    assert "| case | default | lpt | lpt ratio |\n|---|---|---|---|" in md
    assert "| causal@8192 | 9.95 | 10.30 | 1.035 |" in md
    # one variant alone: no ratio columns (and no empty header cell)
    one = table(parse(_text(kernels[:2], segs[:1])))
    assert "| case | default |\n|---|---|\n| causal@8192 | 10.00 |" in one


def test_parse_cases_reads_mask_at_seqlen_and_names_the_flag():
    from bench.cycles import parse_cases

    (case,) = parse_cases("causal@8192")
    assert (case.mask, case.seqlen) == ("causal", 8192)
    assert [c.mask for c in parse_cases("full@4096,document@4096")] == ["full", "document"]
    with pytest.raises(SystemExit, match=r"--case: 'nope@8192' is not MASK@SEQLEN"):
        parse_cases("nope@8192", "--case")
    with pytest.raises(SystemExit, match=r"--cases: 'causal' is not MASK@SEQLEN"):
        parse_cases("causal")


def test_run_under_ncu_builds_the_child_command(tmp_path, monkeypatch):
    import os
    import sys

    from bench.cycles import run_under_ncu

    fake = tmp_path / "bin" / "ncu"
    fake.parent.mkdir()
    # A stand-in ncu: prints its arguments, one per line, and fails when told to.
    fake.write_text(
        '#!/bin/sh\nfor a in "$@"; do echo "$a"; done\n[ "$FAIL" = 1 ] && exit 3\nexit 0\n'
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{fake.parent}{os.pathsep}{os.environ['PATH']}")
    csv_path = tmp_path / "out" / "x.csv"
    text = run_under_ncu(
        "bench.cycles", ["variants", "--cases", "causal@8192"], ["-k", "K"], str(csv_path)
    )
    args = text.split("\n")[:-1]
    assert args[:6] == [
        "--profile-from-start",
        "off",
        "--clock-control",
        "none",
        "--target-processes",
        "application-only",
    ]
    assert args[6:9] == ["-k", "K", "--csv"]
    assert args[9:] == [
        sys.executable,
        "-m",
        "bench.cycles",
        "variants",
        "--cases",
        "causal@8192",
        "--child",
    ]
    assert csv_path.read_text() == text
    monkeypatch.setenv("FAIL", "1")
    with pytest.raises(SystemExit, match="ncu exited with 3"):
        run_under_ncu("bench.cycles", [], [], str(csv_path))
    monkeypatch.setenv("PATH", str(tmp_path / "nowhere"))
    with pytest.raises(SystemExit, match=r"ncu .* is not on PATH: bench.ncu_source needs it"):
        run_under_ncu("bench.ncu_source", [], [], str(csv_path))
