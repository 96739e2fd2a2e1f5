"""The whole-rack Galera recovery choice, from recorded grastate.dat and recovery outputs."""

from pathlib import Path

import pytest

from rackforge.nodeagent import galera_state as gs

SAMPLES = Path(__file__).parent / "samples" / "galera"
UUID = "5ee99582-bb8d-11e2-b8e3-23de375c1d30"
CONTROLLERS = [(0, "c1"), (1, "c2"), (2, "c3")]


def sample(name):
    return (SAMPLES / name).read_text()


def test_grastate_and_recovery_outputs_parse():
    assert gs.parse_grastate(sample("grastate-clean.dat")) == gs.Position(UUID, 1234, True)
    assert gs.parse_grastate(sample("grastate-crashed.dat")) == gs.Position(UUID, -1, False)
    assert gs.parse_recovered(sample("recovery-1240.txt")) == (UUID, 1240)
    assert gs.parse_recovered(sample("recovery-mariadbd-log.txt")) == (UUID, 1240)
    assert gs.parse_recovered("nothing here") is None
    assert gs.parse_grastate("# empty\n") is None


def test_a_crashed_node_reports_its_recovered_seqno_a_clean_one_its_saved_one():
    crashed = gs.position(sample("grastate-crashed.dat"), sample("recovery-1240.txt"))
    assert crashed == gs.Position(UUID, 1240, False)
    clean = gs.position(sample("grastate-clean.dat"), sample("recovery-1240.txt"))
    assert clean == gs.Position(UUID, 1234, True)


def test_the_most_advanced_node_bootstraps_never_one_behind():
    reports = {"c1": gs.position(sample("grastate-crashed.dat"), sample("recovery-1236.txt")),
               "c2": gs.position(sample("grastate-crashed.dat"), sample("recovery-1240.txt")),
               "c3": gs.position(sample("grastate-clean.dat"))}
    assert gs.choose(reports, CONTROLLERS) == gs.Choice(seed="c2")


def test_ties_go_to_safe_to_bootstrap_then_the_lowest_slot():
    same = gs.Position(UUID, 1240)
    assert gs.choose({"c1": same, "c2": same, "c3": same}, CONTROLLERS).seed == "c1"
    assert gs.choose({"c1": same, "c2": same, "c3": same},
                     [(0, "c3"), (1, "c1"), (2, "c2")]).seed == "c3"
    safe = gs.Position(UUID, 1240, True)
    assert gs.choose({"c1": same, "c2": safe, "c3": same}, CONTROLLERS).seed == "c2"


def test_a_missing_report_means_wait():
    choice = gs.choose({"c1": gs.Position(UUID, 9)}, CONTROLLERS)
    assert choice.seed is None and choice.wait and "c2, c3" in choice.stop


def test_every_seqno_unknown_stops_with_one_line():
    unknown = gs.position(sample("grastate-crashed.dat"), sample("recovery-unknown.txt"))
    assert unknown.seqno == -1
    choice = gs.choose({n: unknown for _, n in CONTROLLERS}, CONTROLLERS)
    assert choice.seed is None and not choice.wait
    assert "every seqno is -1" in choice.stop and "\n" not in choice.stop


def test_differing_histories_stop_and_name_them():
    other = gs.position(sample("grastate-other-history.dat"), "")
    reports = {"c1": gs.Position(UUID, 10), "c2": gs.Position(UUID, 12), "c3": other}
    choice = gs.choose(reports, CONTROLLERS)
    assert choice.seed is None and not choice.wait
    assert "histories differ" in choice.stop and "a1b2c3d4 on c3" in choice.stop


def test_an_empty_node_does_not_block_the_choice():
    empty = gs.Position(gs.ZERO_UUID, -1)
    reports = {"c1": gs.Position(UUID, 10), "c2": empty, "c3": gs.Position(UUID, 12)}
    assert gs.choose(reports, CONTROLLERS).seed == "c3"


@pytest.mark.parametrize("text", [sample("grastate-crashed.dat"), "uuid: x\n"])
def test_the_seed_is_marked_safe_to_bootstrap(text):
    assert "safe_to_bootstrap: 1" in gs.mark_safe(text)
    assert gs.mark_safe(text).count("safe_to_bootstrap") == 1


def test_a_new_member_list_needs_no_restart_any_other_change_does(tmp_path):
    import dataclasses

    from rackforge.nodeagent import catalogue, galera, hooks

    cnf = tmp_path / "99-rackforge.cnf"
    cnf.write_text("[mysqld]\ninnodb_buffer_pool_size = 128M\n[galera]\n"
                   "wsrep_cluster_address = gcomm://10.0.0.11\n")
    g = galera.Galera("n1", None, datadir=tmp_path, applied=tmp_path / "applied")
    assert not g.stale()                    # nothing started from the files yet
    real = catalogue.load(**hooks.names()).by_name["mariadb"].configs[0]   # the catalogue's
    g.configs = [dataclasses.replace(real, path=str(cnf))]
    g._mark_applied()
    assert not g.stale()
    cnf.write_text(cnf.read_text().replace("gcomm://10.0.0.11",
                                           "gcomm://10.0.0.11,10.0.0.12,10.0.0.13"))
    assert not g.stale()
    cnf.write_text(cnf.read_text().replace("128M", "256M"))
    assert g.stale()
    g._mark_applied()
    assert not g.stale()
