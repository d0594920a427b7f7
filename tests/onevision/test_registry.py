"""The registry's serving pointer: promote refuses gate-rejected versions unless forced, rollback
goes back to the parent (or the newest accepted version before CURRENT), history lists all."""

import pytest

from onevision.registry import RegistryError, current_version, history, lineage, promote, publish, rollback, trained_run


def _publish(root, tmp_path, name: str, parent=None, status=None, make_current=True):
    src = tmp_path / f"{name}.bin"
    src.write_bytes(name.encode())
    extra = {"status": status} if status else None
    return publish(root, "m", {"w.bin": src}, {"kind": "test"}, {"score": 1.0}, parent=parent,
                   make_current=make_current, extra=extra).name


def test_promote_refuses_a_rejected_version_unless_forced(tmp_path):
    root = tmp_path / "reg"
    v1 = _publish(root, tmp_path, "a")
    v2 = _publish(root, tmp_path, "b", parent=v1, status="rejected", make_current=False)
    with pytest.raises(RegistryError, match="rejected"):
        promote(root, "m", v2)
    assert current_version(root, "m") == v1
    promote(root, "m", v2, force=True)
    assert current_version(root, "m") == v2
    with pytest.raises(RegistryError, match="no version"):
        promote(root, "m", "v0099")


def test_rollback_goes_to_the_parent_then_to_earlier_accepted_versions(tmp_path):
    root = tmp_path / "reg"
    v1 = _publish(root, tmp_path, "a")
    v2 = _publish(root, tmp_path, "b", parent=v1)
    _publish(root, tmp_path, "c", parent=v2, status="rejected", make_current=False)
    v4 = _publish(root, tmp_path, "d", parent=v1)  # trained from v1 after an operator's rollback
    assert rollback(root, "m") == v1  # its parent, not the newer v2
    promote(root, "m", v2)
    assert rollback(root, "m") == v1
    with pytest.raises(RegistryError, match="no earlier accepted version"):
        rollback(root, "m")
    rows = history(root, "m")
    assert [r["status"] for r in rows] == ["accepted", "accepted", "rejected", "accepted"]
    assert [r["current"] for r in rows] == [True, False, False, False] and rows[3]["version"] == v4


def test_rollback_checks_the_target_files(tmp_path):
    root = tmp_path / "reg"
    v1 = _publish(root, tmp_path, "a")
    _publish(root, tmp_path, "b", parent=v1)
    (root / "m" / v1 / "w.bin").write_bytes(b"tampered")
    with pytest.raises(RegistryError, match="sha256"):
        rollback(root, "m")
    assert current_version(root, "m") == "v0002"


def test_lineage_and_the_trained_run_behind_derived_versions(tmp_path):
    root = tmp_path / "reg"

    def put(name, parent=None, trained_by=None):
        src = tmp_path / f"{name}.bin"
        src.write_bytes(name.encode())
        config = {"kind": "test", **({"trained_by": trained_by} if trained_by else {})}
        return publish(root, "m", {"w.bin": src}, config, parent=parent)

    run = put("trained")
    student = put("student", parent=run.name, trained_by="distill")
    update = put("update", parent=student.name, trained_by="dpo-stream")
    assert lineage(update) == [update, student, run]
    assert trained_run(update) == trained_run(student) == trained_run(run) == run
    orphan = put("orphan", trained_by="distill")
    with pytest.raises(RegistryError, match="no trained run"):
        trained_run(orphan)
