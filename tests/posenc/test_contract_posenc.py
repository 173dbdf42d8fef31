"""Every key the hand-kept key ledgers refused for this wing (main 707ac57: each task x model x mode, every key of
every composed node and the top-level mode keys, composed and checked; unread_posenc.json) is still refused now that
what a run reads is the fields of the dataclasses it consumes: one error naming the key, and what reads it instead
wherever the ledger said so."""
import pytest
from refusals import assert_still_refused, ledger_cases

CASES = ledger_cases(__file__)


@pytest.mark.parametrize("path", sorted(CASES))
def test_every_key_the_ledgers_refused_is_still_refused_with_what_reads_it(path):
    assert_still_refused(path, CASES[path])
