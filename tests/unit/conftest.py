"""Unit tests never write outside their temporary directories."""

import pytest


@pytest.fixture(autouse=True)
def _private_issue_dir(tmp_path, monkeypatch):
    # `firstboot run` writes the console banner; keep the host's /etc/issue.d out of it
    monkeypatch.setenv("RACKFORGE_ISSUE_DIR", str(tmp_path / "issue.d"))


@pytest.fixture
def real_profiles(tmp_path, monkeypatch):
    """Load the repository's real profiles without diskimage-builder installed: the stock
    elements they name (debian-minimal, baremetal, ...) exist as empty stand-ins on
    ELEMENTS_PATH, so only what the test reads (cluster, storage policy) matters."""
    import yaml

    from rackforge import paths
    from rackforge.profile import load_profile

    stock = tmp_path / "stock-elements"
    for path in paths.profiles_dir().glob("*.yaml"):
        for name in yaml.safe_load(path.read_text()).get("elements") or []:
            if not (paths.elements_dir() / name).is_dir():
                (stock / name).mkdir(parents=True, exist_ok=True)
    monkeypatch.setenv("ELEMENTS_PATH", str(stock))
    return load_profile
