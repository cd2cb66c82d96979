"""Who gets the item: members, delegates, teams by round robin or least loaded, the thread's author."""

from __future__ import annotations

import math
from datetime import datetime

from service.inputs import to_utc
from service.routing.conditions import _quote
from service.routing.facts import Directory, Facts, MemberInfo, TeamInfo
from service.routing.schema import AssignedBy, AssignMember, AssignTeam, AssignThreadAuthor, StrategyName

# ---- assignment -------------------------------------------------------------------------------------------


def _when(moment: datetime) -> str:
    moment = to_utc(moment)
    if (moment.hour, moment.minute, moment.second, moment.microsecond) == (0, 0, 0, 0):
        return moment.date().isoformat()
    return moment.strftime("%Y-%m-%d %H:%M UTC")


class _Assigner:
    """Resolves a rule's assignment against the directory at `now`, collecting the words for the reason."""

    def __init__(
        self, directory: Directory, now: datetime, *, keep: tuple[str | None, str | None] | None = None
    ) -> None:
        self.directory = directory
        self.now = to_utc(now)
        self.keep = keep  # (team id, member id) of an item being re-routed

    def unavailable(self, member_id: str, member: MemberInfo | None) -> str | None:
        """Why the member cannot take the item now (None: they can)."""
        if member is None:
            return f"member {_quote(member_id)} is not in the directory"
        if not member.active:
            return f"{member.name} is inactive"
        if member.away_until is not None and self.now < to_utc(member.away_until):
            return f"{member.name} is away until {_when(member.away_until)}"
        return None

    def load(self, member: MemberInfo) -> tuple[int, int]:
        load = self.directory.load.get(member.id, 0)
        return (load if isinstance(load, int) else 0), member.capacity

    def person(self, member: MemberInfo) -> tuple[MemberInfo | None, AssignedBy | None, str]:
        """The member, else their delegate if available; with what happened, in words."""
        why = self.unavailable(member.id, member)
        if why is None:
            return member, None, member.name
        if member.delegate is None:
            return None, None, f"{why} and has no delegate"
        delegate = self.directory.members.get(member.delegate)
        delegate_why = self.unavailable(member.delegate, delegate)
        if delegate is None or delegate_why is not None:
            return None, None, f"{why} and their delegate is unavailable ({delegate_why})"
        return delegate, "delegate", f"{delegate.name}, the delegate of {member.name} ({why})"

    def team(
        self, team_id: str, strategy: StrategyName | None
    ) -> tuple[TeamInfo | None, MemberInfo | None, AssignedBy | None, str]:
        """Pick a member of the team by its strategy; the words say who and why (or why nobody)."""
        team = self.directory.teams.get(team_id)
        if team is None:
            return None, None, None, f"team {_quote(team_id)} is not in the directory"
        if self.keep is not None and self.keep[0] == team.id and self.keep[1] in team.members:
            kept = self.directory.members.get(self.keep[1])
            if kept is not None:  # never re-pick inside the team for an item that has a member already
                return team, kept, "kept", f"assigned to team {team.name}: stays with {kept.name}, who has it already"
        strategy = strategy or team.strategy
        if strategy not in ("round_robin", "least_loaded"):
            strategy = "round_robin"
        order = list(dict.fromkeys(team.members))
        label = strategy.replace("_", " ")
        if strategy == "round_robin" and order:
            last = self.directory.last_assigned.get(team.id)
            start = order.index(last) + 1 if last in order else 0
            order = order[start:] + order[:start]
            passed: list[str] = []  # who was passed over on the way to the pick, and why
            for member_id in order:
                member = self.directory.members.get(member_id)
                why = self.unavailable(member_id, member)
                if why is not None or member is None:
                    passed.append(why or "")
                    continue
                load, capacity = self.load(member)
                if load < capacity:
                    detail = f" ({'; '.join(passed)})" if passed else ""
                    return team, member, strategy, f"assigned to team {team.name} by {label}: {member.name}{detail}"
                passed.append(f"{member.name} is at capacity")
        # Least loaded; and round robin when nobody has room (or nobody is available).
        available: list[tuple[float, int, MemberInfo]] = []
        unavailable: list[str] = []
        for position, member_id in enumerate(order):
            member = self.directory.members.get(member_id)
            why = self.unavailable(member_id, member)
            if member is None or why is not None:
                unavailable.append(why or "")
                continue
            load, capacity = self.load(member)
            available.append((load / capacity if capacity > 0 else math.inf, position, member))
        if not available:
            reasons = "; ".join(unavailable) or "it has no members"
            return team, None, None, f"nobody in team {team.name} is available ({reasons}): left in the team's pool"
        with_room = [entry for entry in available if self.load(entry[2])[0] < entry[2].capacity]
        _, _, chosen = min(with_room or available, key=lambda entry: entry[:2])
        load, capacity = self.load(chosen)
        if not with_room:
            return (
                team,
                chosen,
                strategy,
                (
                    f"assigned to team {team.name} by {label}: everyone available is at capacity, so the least "
                    f"loaded: {chosen.name} ({load}/{capacity} open)"
                ),
            )
        return (
            team,
            chosen,
            strategy,
            f"assigned to team {team.name} by {label}: {chosen.name} ({load}/{capacity} open)",
        )

    def resolve(
        self, assign: AssignMember | AssignTeam | AssignThreadAuthor | None, facts: Facts
    ) -> tuple[str | None, str | None, AssignedBy | None, str]:
        """(member id, team id, how, words) for a rule's assignment."""
        if assign is None:
            return None, None, None, "left unassigned (the rule assigns nobody)"
        if isinstance(assign, AssignTeam):
            team, chosen, how, words = self.team(assign.team, assign.strategy)
            if team is None:
                words += ": left unassigned"
            return (chosen.id if chosen else None), (team.id if team else None), how, words
        if isinstance(assign, AssignMember):
            member = self.directory.members.get(assign.member)
            if member is None:
                problem = f"member {_quote(assign.member)} is not in the directory"
            else:
                person, how, words = self.person(member)
                if person is not None:
                    return person.id, self._team_id(assign.team), how or "member", f"assigned to {words}"
                problem = words
        else:
            author = facts.thread_author if isinstance(facts.thread_author, str) and facts.thread_author else None
            source = facts.source if isinstance(facts.source, str) else ""
            found = None if author is None else self.directory.member_for(source, author)
            if author is None:
                problem = "the thread has no known author"
            elif found is None:
                problem = f"the thread author ({source}:{author}) is not a member"
            else:
                person, how, words = self.person(found)
                if person is not None:
                    prefix = "the thread author " if how is None else ""
                    return person.id, self._team_id(assign.team), how or "thread_author", f"assigned to {prefix}{words}"
                problem = f"the thread author {words}"
        if assign.team is None:
            return None, None, None, f"{problem}; no fallback team: left unassigned"
        team, chosen, how, words = self.team(assign.team, None)
        if team is None:
            return None, None, None, f"{problem}; fallback {words}: left unassigned"
        return (chosen.id if chosen else None), team.id, how, f"{problem}; fallback: {words}"

    def _team_id(self, team_id: str | None) -> str | None:
        return team_id if team_id is not None and team_id in self.directory.teams else None
