"""Runs you can trust: a saved run's model folder without its saved_files.json is refused (deleting the list must not
skip the sha256 check), through the one switch in runs.py every wing loads through. The wings' own cases are in
tests/<wing>/test_trust_<wing>.py."""
import re

import pytest

from nlpexp.errors import UserError
from nlpexp.runs import MANIFEST, check_files, loading, write_dir
from saved_runs import MISSING  # tests/ is on sys.path


# -- runs.py (manifest): one switch for a saved run's folder ----------------------------------------------------
def test_require_refuses_a_folder_without_its_list_and_only_then(tmp_path):
    with write_dir(tmp_path / "best") as tmp:
        (tmp / "model.bin").write_bytes(b"weights")
    best = tmp_path / "best"
    check_files(best, require=True)  # a whole saved folder passes
    (best / MANIFEST).unlink()
    check_files(best)  # a folder from elsewhere (model.pretrained=<folder>) has no list: not checked
    with loading(best):
        pass
    for call in (lambda: check_files(best, require=True), lambda: loading(best, require=True).__enter__()):
        with pytest.raises(UserError, match=re.escape(f"{best}: {MISSING}")):
            call()
    (best / MANIFEST).symlink_to(tmp_path / "elsewhere.json")  # a link is damage, named as such
    with pytest.raises(UserError, match="saved_files.json is a link"):
        check_files(best, require=True)
