from rackforge.images import mirrors


def apt_dir(tmp_path, sources=None, listfile=None):
    d = tmp_path / "apt"
    (d / "sources.list.d").mkdir(parents=True)
    if sources:
        (d / "sources.list.d" / "debian.sources").write_text(sources)
    if listfile:
        (d / "sources.list").write_text(listfile)
    return d


DEB822 = """\
Types: deb
URIs: http://mirror.example/debian
Suites: bookworm bookworm-updates
Components: main

Types: deb
URIs: http://mirror.example/debian-security/
Suites: bookworm-security
Components: main
"""


def test_deb822(tmp_path):
    d = apt_dir(tmp_path, sources=DEB822)
    assert mirrors.debian_mirrors(d) == ("http://mirror.example/debian",
                                         "http://mirror.example/debian-security")


def test_one_line_format(tmp_path):
    d = apt_dir(tmp_path, listfile="# comment\n"
                "deb [arch=amd64] http://m.example/debian bookworm main\n"
                "deb http://s.example/debian-security bookworm-security main\n")
    assert mirrors.debian_mirrors(d) == ("http://m.example/debian",
                                         "http://s.example/debian-security")


def test_environment_wins(tmp_path):
    d = apt_dir(tmp_path, sources=DEB822)
    env = mirrors.dib_mirror_env({"DIB_DISTRIBUTION_MIRROR": "http://mine/debian"}, d)
    assert env == {"DIB_DEBIAN_SECURITY_MIRROR": "http://mirror.example/debian-security"}


def test_no_sources_no_settings(tmp_path):
    assert mirrors.dib_mirror_env({}, apt_dir(tmp_path)) == {}
