"""The budget in one place (issue 15 item 2): what a method is granted, and the check after every run
that what it spent is what the suite grants (the harness and ``validate --contributed`` share it)."""

from __future__ import annotations

from conftest import quick_smoke_suite

from initbench.method.registry import get_method
from initbench.run.harness import run_one
from initbench.spec.budget import Budget, CalibrationSpec, Spend
from initbench.spec.suite import load_suite

BUDGET = Budget(steps=10, batch_size=4, max_length=8, calibration=CalibrationSpec(examples=32, batch_size=8))


def test_granted_calibration_is_the_smaller_of_reference_and_allowance():
    assert BUDGET.granted_calibration(None) == BUDGET.calibration
    assert BUDGET.granted_calibration(8).examples == 8
    assert BUDGET.granted_calibration(256).examples == 32
    assert BUDGET.granted_calibration(8).batch_size == 8


def test_spent_problems():
    assert BUDGET.spent_problems(10, 300, 32, status="ok") == []
    assert BUDGET.spent_problems(9, 300, 0, status="ok") == ["9 optimizer steps, the suite grants budget.steps 10"]
    assert BUDGET.spent_problems(4, 100, 0, status="diverged") == []  # a diverged run stops early
    assert "321 training tokens" in BUDGET.spent_problems(10, 321, 0, status="ok")[0]  # > 10 x 4 x 8
    assert "33 calibration examples" in BUDGET.spent_problems(10, 300, 33, status="ok")[0]
    assert BUDGET.spent_problems(None, None, None, status="failed") == []
    assert BUDGET.spent_problems(0, 0, 0, status="ok", trains=False) == []
    assert "for a method that does not train" in BUDGET.spent_problems(1, 5, 0, status="ok", trains=False)[0]


def test_a_run_that_spends_other_than_its_budget_fails_and_says_why(tmp_path, monkeypatch):
    suite = load_suite(str(quick_smoke_suite(tmp_path, steps=3)))
    add, calls = Spend.add_training_step, []

    def skip_the_second(self, tokens, base_params, trainable_params):
        calls.append(tokens)
        if len(calls) != 2:  # a loop that lost count of one step
            add(self, tokens, base_params, trainable_params)

    monkeypatch.setattr(Spend, "add_training_step", skip_the_second)
    outcome = run_one(suite, get_method("lora"), suite.tasks[0], 0, tmp_path / "runs")
    assert outcome.status == "failed"
    assert "spent other than its budget: 2 optimizer steps, the suite grants budget.steps 3" in outcome.error
