"""``rackforge.*`` kernel arguments: what the boot service writes, first boot reads back."""

import pytest
from hypothesis import given, strategies as st

from rackforge import kernelargs
from rackforge.firstboot import bootstrap
from rackforge.pxe import bootscript

WORD = st.text(st.characters(blacklist_categories=("Cs", "Zs", "Zl", "Zp", "Cc"),
                             blacklist_characters="\"'\\\x85\xa0"),
               min_size=1, max_size=40)


@given(st.dictionaries(st.sampled_from(sorted(kernelargs.FIELDS)), WORD))
def test_every_written_line_reads_back_the_same(values):
    line = kernelargs.format(**values)
    assert kernelargs.parse("BOOT_IMAGE=/vmlinuz quiet %s console=ttyS0" % line) == values


def test_the_boot_service_and_first_boot_agree():
    decision = bootscript.Decision("install", "n1", "installing")
    line = bootscript.kernel_args(decision, "10.0.0.5", "http://10.0.0.5:8080", "rack1",
                                  "abc-123")
    assert line == ("rackforge.mode=install rackforge.seed=10.0.0.5 "
                    "rackforge.server=http://10.0.0.5:8080 rackforge.cluster=rack1 "
                    "rackforge.node=abc-123")
    assert bootstrap.from_cmdline("quiet " + line) == {
        "cluster": "rack1", "boot": {"mode": "install", "seed": "10.0.0.5",
                                     "server": "http://10.0.0.5:8080", "node": "abc-123"}}


@pytest.mark.parametrize("value", ["two words", "quo'te", 'dq"', "", "x" * 513, "tab\there"])
def test_a_value_that_would_not_survive_the_command_line_is_refused(value):
    with pytest.raises(kernelargs.BadKernelArg, match="rackforge.seed="):
        kernelargs.format(seed=value)


def test_an_unknown_name_is_refused_and_unknown_arguments_are_ignored():
    with pytest.raises(kernelargs.BadKernelArg, match="known names are mode, seed"):
        kernelargs.format(token="abc")
    assert kernelargs.parse("rackforge.token=abc rackforge.mode=local rackforge.x") == {
        "mode": "local"}
