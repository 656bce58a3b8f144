"""The study storage: Optuna's RDBStorage with heartbeats; bad URLs are one sentence."""

from __future__ import annotations

import pytest

from bsnas.errors import BsnasError
from bsnas.search.storage import open_storage


def test_open_storage_rejects_a_bad_url_in_one_sentence():
    with pytest.raises(BsnasError, match="cannot open this Optuna storage"):
        open_storage("nosuchdb://x")
