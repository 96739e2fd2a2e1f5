from rackforge.images import disk

MIB = 1024 * 1024


def test_layout_is_aligned_and_ordered():
    layout = disk.plan_layout(root_fs_size=1000 * MIB + 1, esp_mib=128)
    parts = layout.partitions
    assert [p.type_code for p in parts] == ["EF02", "EF00", "8304"]
    for p in parts:
        assert p.start % MIB == 0 and p.size % MIB == 0
    for a, b in zip(parts, parts[1:]):
        assert a.start + a.size == b.start
    assert layout.root.size == 1001 * MIB          # rounded up, never truncated
    # room for the backup GPT after the last partition
    assert layout.size - (layout.root.start + layout.root.size) >= 33 * 512


def test_copy_into_keeps_holes(tmp_path):
    img = tmp_path / "fs.img"
    img.write_bytes(b"A" * 4096 + bytes(32 * MIB) + b"B" * 4096)
    target = tmp_path / "disk"
    with open(target, "wb") as f:
        f.truncate(64 * MIB)
    disk.copy_into(target, img, 2 * MIB)
    data = target.read_bytes()
    assert data[2 * MIB:2 * MIB + 4096] == b"A" * 4096
    end = 2 * MIB + 4096 + 32 * MIB
    assert data[end:end + 4096] == b"B" * 4096
    # whole zero chunks were skipped, not written: the file stays sparse
    assert target.stat().st_blocks * 512 < 20 * MIB


def test_root_fs_size_has_room_for_tree_and_free_space(tmp_path):
    (tmp_path / "f").write_bytes(b"x" * (3 * MIB))
    size = disk.root_fs_size(tmp_path, free_mib=100)
    assert size >= 103 * MIB and size % MIB == 0
