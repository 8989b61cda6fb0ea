import subprocess
import sys

from gscore.cli import main


def test_list_shows_rtn_with_its_distribution(capsys, gscore_host):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    rtn_line = next(line for line in out.splitlines() if line.startswith("rtn "))
    assert "gscore-rtn" in rtn_line and "Round-to-nearest" in rtn_line


def test_info_describes_an_algorithm_by_alias(capsys, gscore_host):
    assert main(["info", "round_to_nearest"]) == 0
    out = capsys.readouterr().out
    assert "class:        gscore_rtn.RoundToNearest" in out


def test_info_of_an_unknown_name_fails_with_a_suggestion(capsys, gscore_host):
    assert main(["info", "rnt"]) == 2
    assert "Did you mean 'rtn'?" in capsys.readouterr().err


def test_console_script_lists_without_importing_mindspore():
    code = "import sys; from gscore.cli import main; main(['list']); assert 'mindspore' not in sys.modules"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stderr
    assert "rtn" in result.stdout


def test_launch_checks_its_arguments_before_starting_anything(capsys):
    assert main(["launch", "--workers", "0", "job.py"]) == 2
    assert "workers must be a positive int" in capsys.readouterr().err
    assert main(["launch", "--workers", "2", "job.sh"]) == 2
    assert "must start with the path of a Python script" in capsys.readouterr().err
