"""A cycle's readings, and the lookups one policy's checks make in them: the answer and the query
under each key, and whether an arm has enough samples (``traffic.minSamples``) to be judged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from controller.core.checkrecord import fmt
from controller.core.policy import Policy
from controller.core.queries import Arm, Part, PlannedQuery, QueryKey, QueryText, Reading, ReadingKind, Source
from controller.core.state import Outcome

Readings = Mapping[QueryKey, Reading]


class PolicyReadings:
    """Looks up readings and sample counts for one policy."""

    def __init__(self, policy: Policy, queries: Sequence[PlannedQuery], readings: Readings) -> None:
        self.policy = policy
        self.flag = policy.flag_key
        self.planned = {local_key(q.key): q for q in queries}
        self.readings = readings
        self.min_samples = policy.spec.traffic.min_samples if policy.spec.traffic else 0

    def reading(self, key: QueryKey) -> Reading:
        """The answer under ``key`` (built without a flag) for this policy's flag."""
        found = self.readings.get(QueryKey(key.source, key.name, key.arm, key.part, self.flag))
        if found is None:
            return Reading.error(f"no answer was gathered for {key.source.value} {key.name!r}")
        return found

    def query(self, key: QueryKey) -> QueryText:
        """The query behind ``key`` (its text is built when the record is)."""
        return self.planned.get(local_key(key), "")

    def samples(self, arm: Arm) -> Reading | None:
        if self.policy.spec.traffic is None:
            return None
        return self.reading(QueryKey(Source.TRAFFIC, "traffic", arm))

    def shortfall(self, arm: Arm) -> tuple[Outcome, str] | None:
        """Why this arm's evidence is not enough, if it is not."""
        samples = self.samples(arm)
        if samples is None:
            return None
        if samples.kind is ReadingKind.ERROR:
            return Outcome.ERROR, f"{arm.value} sample count: {samples.detail}"
        if samples.kind is ReadingKind.NO_DATA or samples.value is None:
            return Outcome.NO_DATA, f"{arm.value} sample count: {samples.detail or 'no data'}"
        if samples.value < self.min_samples:
            missing = self.min_samples - samples.value
            return (
                Outcome.NO_DATA,
                f"not enough samples yet: {arm.value} has {fmt(samples.value)} of {self.min_samples} samples "
                f"({fmt(missing)} missing)",
            )
        return None

    def sample_count(self, arm: Arm) -> float | None:
        samples = self.samples(arm)
        return samples.value if samples is not None else None


def local_key(key: QueryKey) -> tuple[Source, str, Arm, Part]:
    """A key within one policy's queries (whose flag is the policy's)."""
    return key.source, key.name, key.arm, key.part
