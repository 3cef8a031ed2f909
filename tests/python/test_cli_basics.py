import subprocess


def test_version_prints_name_and_exits_zero(qed_bin):
    out = subprocess.run([qed_bin, "--version"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 0
    assert out.stdout.startswith("qed ")


def test_unknown_subcommand_is_one_clear_error(qed_bin):
    out = subprocess.run([qed_bin, "frobnicate"], capture_output=True, text=True, timeout=30)
    assert out.returncode != 0
    assert "frobnicate" in (out.stderr + out.stdout)
