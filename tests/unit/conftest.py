"""Unit tests never write outside their temporary directories."""

import pytest


@pytest.fixture(autouse=True)
def _private_issue_dir(tmp_path, monkeypatch):
    # `firstboot run` writes the console banner; keep the host's /etc/issue.d out of it
    monkeypatch.setenv("RACKFORGE_ISSUE_DIR", str(tmp_path / "issue.d"))
