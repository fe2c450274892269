"""``--strategy evolution`` with no more trials than the population is a random search: warn."""

from __future__ import annotations

import pytest

from scidl.search.evolution import random_only_message


@pytest.mark.parametrize(("trials", "population"), [(4, 8), (8, 8), (1, 2)])
def test_message_when_the_budget_ends_in_the_first_generation(trials, population):
    msg = random_only_message(trials, population)
    assert msg is not None and "random search" in msg
    assert f"{trials} trials" in msg and f"population of {population}" in msg


def test_no_message_with_more_trials_than_the_population():
    assert random_only_message(9, 8) is None


def test_cli_warns_once_for_evolution_below_the_population(tmp_path, capsys):
    """Before, ``--trials 4 --population 8`` ran 4 random trials and said nothing."""
    from scidl.cli import main

    code = main(["search", "toy", "--objective", "toy", "--strategy", "evolution", "--trials", "2",
                 "--population", "4", "--out", str(tmp_path / "out"), "--quiet", "--no-report"])
    err = [ln for ln in capsys.readouterr().err.splitlines() if "random search" in ln]
    assert code == 0
    assert len(err) == 1 and err[0].startswith("scidl: warning: --strategy evolution with 2 trials")


def test_cli_is_quiet_for_other_strategies(tmp_path, capsys):
    from scidl.cli import main

    code = main(["search", "toy", "--objective", "toy", "--strategy", "random", "--trials", "2",
                 "--population", "4", "--out", str(tmp_path / "out"), "--quiet", "--no-report"])
    assert code == 0 and "random search" not in capsys.readouterr().err
