"""A hypothesis state machine over every ledger operation, against the embedded AWS.

One fresh account per example. After every step the returned balance must equal a plain
Python model; no spend may ever leave the balance below zero (only a clawback can); at the
end of every example `check_invariant` must explain the balance from the records.
"""
from __future__ import annotations

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from chalicelib.credits import ledger
from chalicelib.core.errors import Conflict, InsufficientCredits
from chalicelib.aws import store
from scripts.bench_ledger import open_account
from tests.ledger.conftest import delete_keys

SLOT = ("active_streams", 2)
amounts = st.integers(min_value=1, max_value=120)


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.user_id = ""
        self.ids = 0
        self.written: list[tuple[str, dict]] = []  # every key an example wrote, to delete after
        self.balance = 0
        self.clawed_back = False
        self.slots = 0
        self.held: dict[str, tuple[int, bool]] = {}  # reservation id -> (amount, takes a slot)
        self.closed: dict[str, ledger.SettleResult] = {}
        self.reserved: dict[str, ledger.Reservation] = {}
        self.charges: dict[str, ledger.LedgerResult] = {}
        self.grants: dict[str, ledger.LedgerResult] = {}
        self.clawbacks: dict[str, ledger.LedgerResult] = {}
        self.extensions: dict[str, int] = {}  # reservation id -> extensions applied

    @initialize()
    def account(self) -> None:
        self.user_id = open_account()
        self.balance = 200
        self.written += [("users", store.key(user_id=self.user_id)),
                         ("transactions", store.key(transaction_id=f"grant#signup#{self.user_id}"))]

    def new_id(self) -> str:
        """Ids that sort in creation order: the same draws pick the same records on replay."""
        self.ids += 1
        return f"{self.user_id}-{self.ids:04d}"

    # --- money in ----------------------------------------------------------------------

    @rule(credits=amounts)
    def grant(self, credits: int) -> None:
        record_id = self.new_id()
        result = ledger.grant(self.user_id, credits, source="admin", record_id=record_id)
        self.balance += credits
        assert (result.balance_after, result.replayed) == (self.balance, False)
        self.grants[record_id] = result
        self.written.append(("transactions", store.key(transaction_id=result.record_id)))

    @rule(credits=amounts)
    def clawback(self, credits: int) -> None:
        record_id = self.new_id()
        result = ledger.clawback(self.user_id, credits, source="refund", record_id=record_id)
        self.balance -= credits
        self.clawed_back = True
        assert (result.balance_after, result.replayed) == (self.balance, False)
        self.clawbacks[record_id] = result
        self.written.append(("transactions", store.key(transaction_id=result.record_id)))

    # --- spends ------------------------------------------------------------------------

    @rule(cost=amounts)
    def charge(self, cost: int) -> None:
        request_id = self.new_id()
        if self.balance < cost:
            with pytest.raises(InsufficientCredits) as refused:
                ledger.charge(self.user_id, cost, service_type="test", request_id=request_id)
            assert refused.value.details == {"balance": self.balance, "required": cost}
            return
        result = ledger.charge(self.user_id, cost, service_type="test", request_id=request_id)
        self.balance -= cost
        assert (result.balance_after, result.replayed) == (self.balance, False)
        assert result.balance_after >= 0
        self.charges[request_id] = result
        self.written += [("usage", store.key(user_id=self.user_id, timestamp=result.record_id)),
                         ("reservations", store.key(reservation_id=f"charge#{self.user_id}#{request_id}"))]

    @rule(amount=amounts, with_slot=st.booleans())
    def reserve(self, amount: int, with_slot: bool) -> None:
        rid = self.new_id()
        kwargs = dict(reservation_id=rid, purpose="test", ref_id=rid, ttl_seconds=600,
                      slot=SLOT if with_slot else None)
        if self.balance < amount:
            with pytest.raises(InsufficientCredits) as refused:
                ledger.reserve(self.user_id, amount, **kwargs)
            assert refused.value.details == {"balance": self.balance, "required": amount}
            return
        if with_slot and self.slots >= SLOT[1]:
            with pytest.raises(Conflict) as full:
                ledger.reserve(self.user_id, amount, **kwargs)
            assert full.value.code == "too_many_sessions"
            return
        result = ledger.reserve(self.user_id, amount, **kwargs)
        self.balance -= amount
        self.slots += with_slot
        assert (result.balance_after, result.state, result.replayed) == (self.balance, "held", False)
        assert result.balance_after >= 0
        self.held[rid] = (amount, with_slot)
        self.reserved[rid] = result
        self.written.append(("reservations", store.key(reservation_id=rid)))

    @precondition(lambda self: self.held)
    @rule(data=st.data(), amount=amounts)
    def extend(self, data: st.DataObject, amount: int) -> None:
        rid = data.draw(st.sampled_from(sorted(self.held)))
        held, with_slot = self.held[rid]
        step = self.extensions.get(rid, 0)
        if self.balance < amount:
            with pytest.raises(InsufficientCredits) as refused:
                ledger.extend(rid, amount, step=step, ttl_seconds=600)
            assert refused.value.details == {"balance": self.balance, "required": amount}
            return
        result = ledger.extend(rid, amount, step=step, ttl_seconds=600)
        self.balance -= amount
        assert (result.amount, result.balance_after, result.replayed) == (held + amount, self.balance, False)
        again = ledger.extend(rid, amount, step=step, ttl_seconds=600)  # the same step: no second hold
        assert (again.amount, again.balance_after, again.replayed) == (held + amount, self.balance, True)
        self.held[rid] = (held + amount, with_slot)
        self.extensions[rid] = step + 1
        self.reserved[rid] = result

    @precondition(lambda self: self.held)
    @rule(data=st.data(), actual=st.integers(min_value=0, max_value=150))
    def settle(self, data: st.DataObject, actual: int) -> None:
        rid = data.draw(st.sampled_from(sorted(self.held)))
        amount, with_slot = self.held.pop(rid)
        result = ledger.settle(rid, actual, service_type="test")
        used = min(actual, amount)
        self.balance += amount - used
        self.slots -= with_slot
        assert result == ledger.SettleResult(used, amount - used, self.balance, False, "settled", result.record_id)
        self.closed[rid] = result
        self.written.append(("usage", store.key(user_id=self.user_id, timestamp=result.record_id)))

    @precondition(lambda self: self.held)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        rid = data.draw(st.sampled_from(sorted(self.held)))
        amount, with_slot = self.held.pop(rid)
        result = ledger.release(rid, reason="test")
        self.balance += amount
        self.slots -= with_slot
        assert result == ledger.SettleResult(0, amount, self.balance, False, "released")
        self.closed[rid] = result

    # --- replays: never a second effect --------------------------------------------------

    @precondition(lambda self: self.closed)
    @rule(data=st.data(), actual=st.integers(min_value=0, max_value=150), settle=st.booleans())
    def close_again(self, data: st.DataObject, actual: int, settle: bool) -> None:
        rid = data.draw(st.sampled_from(sorted(self.closed)))
        first = self.closed[rid]
        again = ledger.settle(rid, actual, service_type="test") if settle else ledger.release(rid, reason="again")
        assert again == ledger.SettleResult(first.credits_used, first.credits_refunded,
                                            first.balance_after, True, first.state, first.record_id)
        with pytest.raises(Conflict) as closed:
            ledger.extend(rid, 1, step=self.extensions.get(rid, 0), ttl_seconds=600)
        assert closed.value.code == "reservation_not_held"

    @precondition(lambda self: self.charges or self.grants or self.clawbacks or self.reserved)
    @rule(data=st.data())
    def replay(self, data: st.DataObject) -> None:
        kinds = [k for k, records in (("charge", self.charges), ("grant", self.grants),
                                      ("clawback", self.clawbacks), ("reserve", self.reserved)) if records]
        kind = data.draw(st.sampled_from(kinds))
        if kind == "reserve":
            rid = data.draw(st.sampled_from(sorted(self.reserved)))
            first = self.reserved[rid]
            again = ledger.reserve(self.user_id, first.amount, reservation_id=rid, purpose="test",
                                   ref_id=rid, ttl_seconds=600, slot=SLOT)
            assert (again.replayed, again.balance_after, again.amount) == (True, first.balance_after, first.amount)
            return
        records = {"charge": self.charges, "grant": self.grants, "clawback": self.clawbacks}[kind]
        record_id = data.draw(st.sampled_from(sorted(records)))
        first = records[record_id]
        if kind == "charge":
            again = ledger.charge(self.user_id, first.credits, service_type="test", request_id=record_id)
        elif kind == "grant":
            again = ledger.grant(self.user_id, first.credits, source="admin", record_id=record_id)
        else:
            again = ledger.clawback(self.user_id, first.credits, source="refund", record_id=record_id)
        assert again == ledger.LedgerResult(first.balance_after, True, first.record_id, first.credits)

    # --- what must always hold ---------------------------------------------------------

    @invariant()
    def never_negative_except_through_clawback(self) -> None:
        assert self.balance >= 0 or self.clawed_back

    def teardown(self) -> None:
        if not self.user_id:
            return
        try:
            report = ledger.check_invariant(self.user_id)
            assert report.ok and report.actual == self.balance, report
            assert report.held == sum(amount for amount, _ in self.held.values()), report
        finally:
            delete_keys(self.written)


def test_ledger_state_machine(private_tables):
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=200,
            stateful_step_count=10,
            deadline=None,
            database=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
        ),
    )
