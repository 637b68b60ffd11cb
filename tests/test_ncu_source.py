"""bench.ncu_source: the SASS source page is parsed past ncu's own lines, instructions group
into loops by execution count, and the report names the hot instructions and loop mixes."""

import pytest

from bench.ncu_source import loops, parse, report

HEAD = (
    '"Address","Source","Warp Stall Sampling (All Samples)",'
    '"Warp Stall Sampling (Not-issued Samples)","Instructions Executed",'
    '"stall_barrier","stall_long_sb","stall_wait","stall_wait (Not Issued)"'
)
# (source, samples, executed, barrier, long_sb, wait): a 3-instruction loop run 1000 times,
# a 2-instruction loop run 100 times, a prologue run once.
ROWS = [
    ("MOV R1, c[0x0][0x28]", 1, 1, 0, 0, 1),
    ("@!P0  BRA 0x7f00", 500, 1000, 0, 400, 50),
    ("FMUL R2, R2, R3", 40, 1000, 0, 0, 30),
    ("BAR.SYNC.DEFER_BLOCKING R4, 0x100", 300, 1000, 250, 0, 0),
    ("LDG.E.64 R8, desc[UR4][R6.64]", 9, 100, 0, 0, 5),
    ("@P1 ISETP.GE.AND P0, PT, R1, R2, PT", 2, 100, 0, 0, 1),
]


def _csv(preamble: bool = True) -> str:
    lines = ["==PROF== Connected to process 1", "done random_eviction 8192"] if preamble else []
    lines.append(HEAD)
    for i, (src, s, n, bar, lsb, w) in enumerate(ROWS):
        lines.append(f'"0x{i:04x}","{src}","{s}","{s // 2}","{n:,}","{bar}","{lsb}","{w}","{w}"')
    return "\n".join(lines) + "\n"


def test_parse_skips_preamble_and_reads_counters():
    ins = parse(_csv())
    assert [i.executed for i in ins] == [1, 1000, 1000, 1000, 100, 100]
    assert ins[1].samples == 500
    assert ins[1].opcode == "BRA"  # guard predicate dropped
    assert ins[5].opcode == "ISETP.GE.AND"
    # stall columns only (the not-issued copies are left out), zero counts dropped
    assert ins[1].stalls == {"long_sb": 400, "wait": 50}
    assert parse(_csv(preamble=False))[3].stalls == {"barrier": 250}


def test_parse_rejects_other_pages():
    with pytest.raises(ValueError, match="no source table"):
        parse('"ID","Kernel Name","Metric Name"\n"0","k","sm__cycles_elapsed.max"\n')
    with pytest.raises(ValueError, match="lacks"):
        parse('"Address","Source"\n"0x0","MOV R1, R2"\n')


def test_loops_group_by_execution_count():
    lps = loops(parse(_csv()))
    # the prologue (1 of 3201 executions) is under the 2% share and left out
    assert [(lp.executed, len(lp.instrs)) for lp in lps] == [(1000, 3), (100, 2)]
    body = lps[0]
    assert body.samples == 840
    per = body.stalls_per_1000()
    assert per["long_sb"] == pytest.approx(400) and per["barrier"] == pytest.approx(250)
    assert body.opcodes()["FMUL"] == 1


def test_report_lists_hot_instructions_and_loops():
    text = report(parse(_csv()), top=2)
    lines = text.splitlines()
    assert lines[0] == "6 instructions, 852 warp samples, 3201 warp-level executions"
    hot = [ln for ln in lines if ln[:6].strip().isdigit()]
    assert "@!P0  BRA 0x7f00" in hot[0] and "long_sb 400" in hot[0]
    assert "BAR.SYNC" in hot[1] and len(hot) == 2
    body = "- 1000 executions x 3 instructions, 98.6% of samples"
    assert any(ln.startswith(body) for ln in lines)
    assert any("opcodes per execution: LDG.E.64 1, ISETP.GE.AND 1" in ln for ln in lines)
