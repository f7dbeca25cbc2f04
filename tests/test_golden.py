"""results.json and every report stay byte-identical on the recorded runs: `farm report`,
`farm kcidb`, `farm compare` and `farm merge` over the recorded result directories
(tests/data/run-ab, tests/data/run-mixed) write exactly what the farm wrote for them before
its results became typed records (tests/data/golden/, made by `python tests/golden.py --code
DIR` with that farm's checkout; see tests/golden.py for what is normalized: the copy's path,
a comparison's or merge's own id and start time)."""

import difflib

import pytest
from conftest import REPO
from golden import GOLDEN, RECORDED, outputs


@pytest.mark.parametrize("name", RECORDED)
def test_the_reports_of_a_recorded_run_are_byte_identical(name, tmp_path):
    got = outputs(REPO, name, tmp_path)
    want = {str(p.relative_to(GOLDEN / name)): p.read_text()
            for p in sorted((GOLDEN / name).rglob("*")) if p.is_file()}
    assert sorted(got) == sorted(want)
    for key in want:
        if got[key] != want[key]:
            diff = "".join(list(difflib.unified_diff(
                want[key].splitlines(True), got[key].splitlines(True), f"golden/{key}",
                f"now/{key}"))[:40])
            pytest.fail(f"{name}: {key} differs from what the farm wrote before:\n{diff}")
