"""Which trial gave which result: the tuner's ledger of hand-outs, trial ends and results.

NNI 3.0's local and remote training services hand queued parameters to whichever trial asks
first (docs/architecture.md §8), so the parameter id NNI *recorded* for a trial job, the one
``trial_end`` names, can belong to another architecture than the one the trial ran and
*reported* (its final result carries that one). The ledger therefore never charges a trial end
to an architecture:

- a result is paired with the architecture handed out under the parameter id it reports;
- a trial end only says that one trial job of those handed out has ended;
- when every job handed out in a generation has ended and every result those jobs reported has
  arrived, the generation's hand-outs still without a result are the failed ones
  (:meth:`TrialLedger.settled`). With NNI's database, "every result reported" is read from it
  (the manager stores a metric before it forwards it); without, a successful end is taken to
  owe one result.

A trial that ended failed after reporting metrics under a parameter id without a final result
is counted failed at once under that *reported* id (:meth:`TrialLedger.reported_failures`).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .nni_records import TrialRecords


@dataclass
class TrialLedger:
    """The bookkeeping of one tuner process (parameter ids are unique within it)."""

    handed: dict[int, str] = field(default_factory=dict)  # parameter id -> architecture key handed out
    current: set[int] = field(default_factory=set)  # ids handed out in the open generation
    ended: dict[int, bool] = field(default_factory=dict)  # recorded id of an ended trial job -> succeeded
    received: set[int] = field(default_factory=set)  # reported ids whose final result arrived
    valid: int = 0  # valid results received
    first_failure: int | None = None  # recorded id of the first trial job that ended failed

    def hand_out(self, pid: int, key: str) -> None:
        self.handed[pid] = key
        self.current.add(pid)

    def next_generation(self) -> None:
        self.current = set()

    def end(self, pid: int, success: bool) -> bool:
        """Note a trial end; False if ``pid`` was not handed out by this process (or ended already)."""
        if pid not in self.handed or pid in self.ended:
            return False
        self.ended[pid] = success
        if not success and self.first_failure is None:
            self.first_failure = pid
        return True

    def receive(self, pid: int, valid: bool) -> None:
        self.received.add(pid)
        self.valid += int(valid)

    def in_flight(self, pids: set[int] | list[int], records: TrialRecords | None) -> bool:
        """Whether results reported by the ended jobs of ``pids`` have yet to arrive."""
        if records is not None:
            jobs = [records.job_of(p) for p in pids if p in self.ended]
            if all(j is not None for j in jobs):
                return any(q in self.handed and q not in self.received
                           for j in jobs for q, _ in records.finals.get(j, ()))  # type: ignore[arg-type]
        succeeded = sum(1 for p in pids if self.ended.get(p))
        return sum(1 for p in pids if p in self.received) < succeeded

    def settled(self, records: TrialRecords | None, force: bool = False) -> list[int]:
        """The ids of the open generation whose architecture no trial will report any more: empty
        until every job handed out in it has ended and (unless ``force``) no result is in flight."""
        if not self.current or any(p not in self.ended for p in self.current):
            return []
        if not force and self.in_flight(self.current, records):
            return []
        return sorted(p for p in self.current if p not in self.received)

    def reported_failures(self, pid: int, records: TrialRecords | None) -> list[int]:
        """Ids under which the trial job recorded as ``pid`` reported metrics but no final result."""
        job = records.job_of(pid) if records is not None else None
        if job is None:
            return []
        finals = {q for q, _ in records.finals.get(job, ())}  # type: ignore[union-attr]
        return sorted(q for q in records.reported.get(job, set()) - finals  # type: ignore[union-attr]
                      if q in self.handed)

    def ended_without_result(self, records: TrialRecords | None) -> int | None:
        """Trial jobs of this process that ended without a valid result, once none is in flight
        (``None`` while one may be); the fail-fast count."""
        ended = list(self.ended)
        if self.in_flight(ended, records):
            return None
        return len(ended) - self.valid
