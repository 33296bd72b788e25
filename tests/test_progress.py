"""uadlab._progress: one bar stays (inner bars transient), a finished bar is complete, notebook bars are text."""

from __future__ import annotations

import json

import pytest

from uadlab import _progress
from uadlab._progress import NOTEBOOK_COLUMNS, progress_bar


def test_a_bar_inside_another_is_transient_and_both_close(capsys):
    with progress_bar(True, range(2), desc="runs", unit="run") as runs:
        for _ in runs:
            with progress_bar(True, total=3, desc="3D-None", unit="epoch") as epochs:
                epochs.update(3)
                assert epochs.leave is False and runs.leave is True
    assert _progress._OPEN == []
    err = capsys.readouterr().err
    assert "runs: 100%" in err and "2/2" in err


def test_a_bar_closed_by_an_error_is_no_longer_open():
    with pytest.raises(KeyboardInterrupt), progress_bar(True, total=5, desc="x", unit="epoch") as bar:
        bar.update(2)
        raise KeyboardInterrupt
    assert _progress._OPEN == [] and bar.n == 2 and bar.total == 5  # keeps its count: it stopped short
    with progress_bar(True, total=1, desc="next", unit="epoch") as after:
        assert after.leave is True  # not taken for a bar inside the stopped one


def test_finish_ends_a_bar_complete_at_its_count(capsys):
    with progress_bar(True, total=20, desc="mean-image:3D-None", unit="epoch") as bar:
        bar.update(1)
        bar.finish()
    assert bar.n == bar.total == 1
    assert "100%" in capsys.readouterr().err.splitlines()[-1]


def test_without_progress_nothing_is_shown_and_iteration_still_works(capsys):
    with progress_bar(False, ["a", "b"], desc="x", unit="subject") as bar:
        assert list(bar) == ["a", "b"]
        bar.update(1)
        bar.set_postfix(loss=1.0)
        bar.finish()
    assert list(progress_bar(False, desc="x", unit="subject")) == []
    assert capsys.readouterr() == ("", "") and _progress._OPEN == []


def test_an_unknown_total_counts_without_a_percentage(capsys):
    with progress_bar(True, iter("abc"), desc="fetching", unit="B") as bar:
        assert list(bar) == ["a", "b", "c"]
    assert "3B" in capsys.readouterr().err


@pytest.mark.slow
def test_notebook_bars_leave_text_and_few_outputs(tmp_path):
    """In a kernel: no widget view is left for a reopened notebook to miss, transient bars share outputs."""
    import nbformat
    from nbclient import NotebookClient

    study = ("from uadlab._progress import progress_bar\n"
             "with progress_bar(True, range(3), desc='reproduce: runs', unit='run') as runs:\n"
             "    for run in runs:\n"
             "        with progress_bar(True, total=20, desc='spatial-vae:3D-Cube-n', unit='epoch') as epochs:\n"
             "            for epoch in range(4):\n"
             "                with progress_bar(True, total=5, desc='batches', unit='batch') as batches:\n"
             "                    batches.update(5)\n"
             "                epochs.set_postfix({'train_loss': '1234.5', 'train_l1_per_voxel': '0.01234',\n"
             "                                    'val_l1_per_voxel': '0.0123', 'val_kl': '123.4'})\n"
             "                epochs.update(1)\n"
             "            epochs.finish()\n")
    predictions = ("for cohort in ('tumour', 'stroke'):\n"
                   "    for split in ('val', 'test'):\n"
                   "        for _ in progress_bar(True, range(3), desc='reconstruct', unit='subject', leave=False):\n"
                   "            pass\n")
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(study), nbformat.v4.new_code_cell(predictions)])
    NotebookClient(nb, kernel_name="python3", timeout=120).execute()
    assert [o["data"] for o in nb.cells[1].outputs] == [{"text/plain": ""}]  # four transient bars, one output
    outputs = nb.cells[0].outputs
    assert all(set(o.get("data", {})) == {"text/plain"} for o in outputs), json.dumps(outputs)[:500]
    texts = [o["data"]["text/plain"] for o in outputs]
    assert len(texts) == 3  # the runs bar and one shared output per inner depth (not 3 + 12 outputs)
    assert texts[0].startswith("reproduce: runs: 100%") and "3/3" in texts[0]
    assert texts[1:] == ["", ""]  # the transient bars are gone
    assert max(map(len, texts)) <= NOTEBOOK_COLUMNS
