"""Provisioning end to end (issue 19): what a removal and a team change cost in
Intercom calls and in time until C1's next poll sees them.

Against `intercom-sync serve` and the simulator, after a baseline of the workspace, each
repetition does, through the provisioning endpoints with a provisioning token:

- a removal (`DELETE /api/v1/users/{id}`), then its idempotent replay (the same
  `Idempotency-Key`), a repeat without a key (`already_removed`) and a dry run of another one;
- a team add (`PUT /api/v1/teams/{t}/members/{u}`), its replay, a repeat without a key
  (`unchanged`) and a dry run of another pair;
- the team removal of the same pair (`DELETE /api/v1/teams/{t}/members/{u}`).

Intercom calls are read from the simulator's request log, cleared before each request. Time to
visible runs from sending the write to the end of the first `GET /api/v1/snapshot` (as C1 polls:
gzip, `If-None-Match` of the ETag it holds) whose body shows the change; the change feed must
carry the change in that same version. The simulator sends `admin.removed_from_workspace` to the
service after each removal, as Intercom does; it must change nothing more.

Ratios are against `bench.reference` on the service's core, measured just before each request:
a bare 304 round trip for the API call, a bare 200 of the same gzip snapshot bytes for the time
to visible.
"""

from __future__ import annotations

import gzip
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx
import orjson

from app.simulator import SimulatorServer, SimWorkspace
from app.store.versioning import membership_grant_id, workspace_grant_id
from bench.common import (
    Context,
    client,
    log,
    median,
    readiness,
    run_baseline,
    start_reference,
    start_service,
)
from bench.loadgen import percentile
from bench.sync import workspace_for
from harness.service import READ_TOKEN, SIM_SECRET, SIM_TOKEN, ServerProcess
from harness.waiting import wait_for

AREA = "provisioning"
PROVISIONING_TOKEN = "bench-provisioning-token-0123456789"
VISIBLE_WITHIN_SECONDS = 30.0
POLL_HEADERS = {"Accept-Encoding": "gzip", "User-Agent": "baton-http/bench"}
# Reference round trips per sample: the fastest of a few, so one scheduling hiccup on the
# shared machine does not become the yardstick.
REFERENCE_TRIES = 3

Calls = Counter[str]


@dataclass
class Cast:
    """Teammates with parts to play, taken from the simulator's workspace before it starts."""

    target: str  # REMOVAL_REASSIGN_ADMIN_ID
    protected: str  # PROTECTED_ADMIN_IDS
    removed: list[str]  # one per repetition
    dry_removed: list[str]  # dry runs only: stay active
    team_pairs: list[tuple[str, str]]  # (team, teammate not in it), added then taken out
    dry_pairs: list[tuple[str, str]]  # dry runs only


def cast_of(workspace: SimWorkspace, repeat: int) -> Cast:
    with workspace.lock:
        admins = list(workspace.admins.values())
        teams = {t.id: list(t.admin_ids) for t in workspace.teams.values()}
    # GET /me answers as the first teammate (the token's own, protected); Fin is not a human.
    humans = [a for a in admins[1:] if not a.email.endswith("@intercom.io")]
    target, protected, rest = humans[0].id, humans[1].id, humans[2:]
    members = [a for a in rest if a.team_ids]
    if len(members) < 4 * repeat:
        raise ValueError(f"the workspace has too few teammates for {repeat} repetitions")
    removed = [a.id for a in members[:repeat]]
    dry_removed = [a.id for a in members[repeat : 2 * repeat]]
    # Team changes take teammates from the other end, so no removal touches them.
    movers = members[::-1]
    team_ids = sorted(t for t, ids in teams.items() if ids)

    def pair(index: int) -> tuple[str, str]:
        user = movers[index]
        free = [t for t in team_ids if user.id not in teams[t]]
        return free[index % len(free)], user.id

    pairs = [pair(i) for i in range(2 * repeat)]
    return Cast(target, protected, removed, dry_removed, pairs[:repeat], pairs[repeat:])


@dataclass
class Sample:
    """One write: its API call, the Intercom calls it made, and when C1 could see it."""

    wall: float
    calls: Calls
    expected: Calls
    reference_rtt: float
    visible: float | None = None
    reference_body: float | None = None
    polls: int = 0
    same_version: bool = False


@dataclass
class Probe:
    """A request that must change nothing: a dry run, a replay, or a repeat."""

    wall: float
    calls: Calls
    expected: Calls
    reference_rtt: float


@dataclass
class Samples:
    removal: list[Sample] = field(default_factory=list)
    team_add: list[Sample] = field(default_factory=list)
    team_removal: list[Sample] = field(default_factory=list)
    probes: dict[str, list[Probe]] = field(default_factory=dict)
    echo_calls: Calls = field(default_factory=Counter)

    def probe(self, kind: str, probe: Probe) -> None:
        self.probes.setdefault(kind, []).append(probe)


class _Run:
    """One service, one simulator, one reference: the repetitions of one workspace size."""

    def __init__(
        self,
        ctx: Context,
        sim: SimulatorServer,
        service: ServerProcess,
        reference: ServerProcess,
        size: int,
        etag: str,
        version: int,
    ) -> None:
        self.ctx = ctx
        self.sim = sim
        self.size = size
        self.etag = etag
        self.version = version
        self.writer = client(service, PROVISIONING_TOKEN)
        self.reader = client(service, READ_TOKEN)
        self.service = service
        self.bare = client(reference, None)
        self.reference_etag = etag
        self.workspace_id = sim.workspace.id_code
        self.samples = Samples()

    def close(self) -> None:
        for http in (self.writer, self.reader, self.bare):
            http.close()

    def fail(self, message: str) -> None:
        self.ctx.report.fail(f"provisioning ({self.size:,}): {message}")

    # -- measuring ------------------------------------------------------------------------------

    def _reference_rtt(self) -> float:
        best = float("inf")
        for _ in range(REFERENCE_TRIES):
            started = time.perf_counter()
            response = self.bare.get(
                "/api/v1/snapshot", headers={**POLL_HEADERS, "If-None-Match": self.reference_etag}
            )
            best = min(best, time.perf_counter() - started)
            if response.status_code != 304:
                raise RuntimeError(f"the reference answered {response.status_code}, not 304")
        return best

    def _reference_body(self) -> float:
        best = float("inf")
        for _ in range(REFERENCE_TRIES):
            started = time.perf_counter()
            with self.bare.stream("GET", "/api/v1/snapshot", headers=POLL_HEADERS) as response:
                b"".join(response.iter_raw())
            best = min(best, time.perf_counter() - started)
        return best

    def _calls(self) -> Calls:
        return Counter(f"{r.method} {r.path}" for r in self.sim.workspace.requests())

    def _send(
        self, method: str, path: str, *, key: str | None = None, dry_run: bool = False
    ) -> tuple[httpx.Response, float, float]:
        """The request, its wall time and the time it was sent (perf_counter)."""
        headers = {"Idempotency-Key": key} if key else {}
        params = {"dry_run": "true"} if dry_run else {}
        sent = time.perf_counter()
        response = self.writer.request(method, path, headers=headers, params=params)
        return response, time.perf_counter() - sent, sent

    def _expect(self, response: httpx.Response, what: str, result: str) -> bool:
        body: dict[str, Any] = {}
        if response.headers.get("content-type", "").startswith("application/json"):
            body = response.json()
        if response.status_code != 200 or body.get("result") != result:
            self.fail(
                f"{what}: expected 200 {result!r}, got {response.status_code} {response.text[:300]}"
            )
            return False
        return True

    def _poll(self, sent: float, shows: Callable[[dict[str, Any]], bool]) -> tuple[float, int]:
        """Poll the snapshot as C1 does until a body shows the change; the time from `sent` to
        the end of that answer, and how many polls it took."""
        polls = 0
        deadline = sent + VISIBLE_WITHIN_SECONDS
        while True:
            polls += 1
            headers = {**POLL_HEADERS, "If-None-Match": self.etag}
            with self.reader.stream("GET", "/api/v1/snapshot", headers=headers) as response:
                raw = b"".join(response.iter_raw())
                answered = time.perf_counter()
                status = response.status_code
                etag = response.headers.get("etag")
                encoding = response.headers.get("content-encoding")
            if status == 200:
                body = orjson.loads(gzip.decompress(raw) if encoding == "gzip" else raw)
                if etag:
                    self.etag = etag
                if shows(body):
                    self.version = int(body["version"])
                    return answered - sent, polls
            elif status != 304:
                raise RuntimeError(f"GET /api/v1/snapshot answered {status}: {raw[:200]!r}")
            if answered > deadline:
                raise TimeoutError(f"the change was not visible after {VISIBLE_WITHIN_SECONDS:g}s")

    def _feed_in_one_version(self, since: int, expected: set[tuple[str, str, str]]) -> bool:
        """Every change after `since` is in the version the snapshot showed, and it holds the
        expected (resource_type, resource_id, op) entries."""
        response = self.reader.get("/api/v1/changes", params={"since": since, "limit": 10000})
        response.raise_for_status()
        feed = response.json()
        changes = feed["changes"]
        versions = {int(c["version"]) for c in changes}
        entries = {(c["resource_type"], c["resource_id"], c["op"]) for c in changes}
        return versions == {self.version} and expected <= entries

    def _unchanged(self, what: str) -> None:
        """A request that should change nothing did not: the snapshot still answers 304."""
        response = self.reader.get(
            "/api/v1/snapshot", headers={**POLL_HEADERS, "If-None-Match": self.etag}
        )
        if response.status_code != 304:
            self.fail(f"{what} changed the snapshot (answered {response.status_code}, not 304)")

    def _probe(
        self,
        kind: str,
        method: str,
        path: str,
        result: str,
        *,
        key: str | None = None,
        dry_run: bool = False,
        expected: Calls | None = None,
    ) -> Probe:
        reference = self._reference_rtt()
        self.sim.workspace.clear_requests()
        response, wall, _ = self._send(method, path, key=key, dry_run=dry_run)
        calls = self._calls()
        self._expect(response, kind, result)
        if key is not None and response.headers.get("idempotent-replayed") != "true":
            self.fail(f"{kind}: the answer is not marked Idempotent-Replayed")
        self._unchanged(kind)
        probe = Probe(wall, calls, expected or Counter(), reference)
        self.samples.probe(kind, probe)
        return probe

    def _write(
        self,
        what: str,
        method: str,
        path: str,
        result: str,
        *,
        key: str,
        calls: Calls,
        shows: Callable[[dict[str, Any]], bool],
        feed: set[tuple[str, str, str]],
    ) -> Sample:
        reference_rtt = self._reference_rtt()
        reference_body = self._reference_body()
        since = self.version
        self.sim.workspace.clear_requests()
        response, wall, sent = self._send(method, path, key=key)
        sample = Sample(wall, Counter(), calls, reference_rtt, reference_body=reference_body)
        if not self._expect(response, what, result):
            sample.calls = self._calls()
            return sample
        sample.visible, sample.polls = self._poll(sent, shows)
        sample.calls = self._calls()
        sample.same_version = self._feed_in_one_version(since, feed)
        if not sample.same_version:
            self.fail(f"{what}: the change feed does not carry it in version {self.version}")
        return sample

    # -- one repetition -------------------------------------------------------------------------

    def removal(self, user_id: str, dry_user_id: str) -> None:
        path = f"/api/v1/users/{user_id}"
        key = f"bench-remove-{user_id}"

        def gone(body: dict[str, Any]) -> bool:
            users = {u["id"] for u in body["users"]}
            held = {g["principal"]["resource_id"] for g in body["grants"]}
            return user_id not in users and user_id not in held

        feed = {
            ("user", user_id, "delete"),
            ("grant", workspace_grant_id(self.workspace_id, user_id), "delete"),
        }
        sample = self._write(
            "removal",
            "DELETE",
            path,
            "removed",
            key=key,
            calls=Counter({"DELETE /admins/remove": 1}),
            shows=gone,
            feed=feed,
        )
        self.samples.removal.append(sample)
        self._echo(user_id)
        self._probe("removal replayed (same Idempotency-Key)", "DELETE", path, "removed", key=key)
        self._probe("removal repeated without a key", "DELETE", path, "already_removed")
        self._probe(
            "removal dry run",
            "DELETE",
            f"/api/v1/users/{dry_user_id}",
            "would_remove",
            dry_run=True,
        )

    def _echo(self, user_id: str) -> None:
        """Intercom's `admin.removed_from_workspace` reaches the service and, once applied,
        has changed nothing: the store is already there."""
        self.sim.workspace.clear_requests()

        def delivered() -> dict[str, Any] | None:
            sent = httpx.get(f"{self.sim.url}/_sim/provisioning", timeout=30).json()["deliveries"]
            return next((d for d in sent if d["admin_id"] == user_id), None)

        delivery = wait_for(delivered, timeout=30, interval=0.01, what="the removal webhook")
        if delivery.get("status") != 200:
            self.fail(f"the removal webhook for {user_id} was answered {delivery}")
        wait_for(
            lambda: readiness(self.service).get("inbox_backlog") == 0,
            timeout=60,
            interval=0.02,
            what="the removal webhook to be applied",
        )
        self.samples.echo_calls += self._calls()
        response = self.reader.get("/api/v1/changes", params={"since": self.version})
        response.raise_for_status()
        feed = response.json()
        if feed["changes"] or int(feed["version"]) != self.version:
            self.fail(
                f"the removal webhook for {user_id} changed the store again: "
                f"{feed['changes'][:5]}, version {feed['version']}"
            )

    def team_change(self, team_id: str, user_id: str, dry_pair: tuple[str, str]) -> None:
        path = f"/api/v1/teams/{team_id}/members/{user_id}"
        grant = membership_grant_id(team_id, user_id)
        read_and_write = Counter({f"GET /teams/{team_id}": 1, f"PUT /teams/{team_id}": 1})

        def grants(body: dict[str, Any]) -> set[str]:
            return {g["id"] for g in body["grants"]}

        add_key = f"bench-add-{team_id}-{user_id}"
        added = self._write(
            "team add",
            "PUT",
            path,
            "added",
            key=add_key,
            calls=read_and_write,
            shows=lambda body: grant in grants(body),
            feed={("grant", grant, "upsert")},
        )
        self.samples.team_add.append(added)
        self._probe("team add replayed (same Idempotency-Key)", "PUT", path, "added", key=add_key)
        # The store cannot know that Intercom still lists the teammate: it reads the team
        # (and writes nothing).
        self._probe(
            "team add repeated without a key",
            "PUT",
            path,
            "unchanged",
            expected=Counter({f"GET /teams/{team_id}": 1}),
        )
        dry_team, dry_user = dry_pair
        self._probe(
            "team add dry run",
            "PUT",
            f"/api/v1/teams/{dry_team}/members/{dry_user}",
            "would_add",
            dry_run=True,
        )
        taken_out = self._write(
            "team removal",
            "DELETE",
            path,
            "removed",
            key=f"bench-takeout-{team_id}-{user_id}",
            calls=read_and_write,
            shows=lambda body: grant not in grants(body),
            feed={("grant", grant, "delete")},
        )
        self.samples.team_removal.append(taken_out)


# -- figures ----------------------------------------------------------------------------------


def _ms(values: list[float]) -> list[float]:
    return [v * 1000 for v in values]


def _p95(values: list[float]) -> float:
    return percentile(sorted(values), 0.95)


def _calls_text(calls: Calls, runs: int) -> str:
    """`GET /teams/{id} x20, PUT /teams/{id} x20 over 20`: paths with their ids folded."""
    folded: Calls = Counter()
    for call, n in calls.items():
        method, path = call.split(" ", 1)
        parts = ["{id}" if part.isdigit() else part for part in path.split("/")]
        folded[f"{method} {'/'.join(parts)}"] += n
    text = ", ".join(f"{call} x{n}" for call, n in sorted(folded.items())) or "none"
    return f"{text} over {runs}"


def _ratio(values: list[float], references: list[float]) -> float:
    """The median of the per-request ratios, each against its own reference."""
    return median([v / r for v, r in zip(values, references, strict=True) if r])


def _write_figures(ctx: Context, size: int, what: str, samples: list[Sample]) -> None:
    done = [s for s in samples if s.visible is not None and s.reference_body is not None]
    if not done:
        return
    label = f"{what} ({size:,} teammates)"
    walls = _ms([s.wall for s in done])
    visible = _ms([s.visible or 0.0 for s in done])
    after_answer = [v - w for v, w in zip(visible, walls, strict=True)]
    rtts = _ms([s.reference_rtt for s in done])
    bodies = _ms([s.reference_body or 0.0 for s in done])
    total: Calls = sum((s.calls for s in done), Counter())
    counts = [float(sum(s.calls.values())) for s in done]
    ctx.figure(
        AREA,
        f"{label}: Intercom calls per request",
        median(counts),
        "calls",
        samples=counts,
        note=_calls_text(total, len(done)),
    )
    ctx.figure(
        AREA,
        f"{label}: API call, median",
        median(walls),
        "ms",
        samples=walls,
        reference=median(rtts),
        ratio=_ratio(walls, rtts),
        note="reference: a bare 304 round trip",
    )
    ctx.figure(AREA, f"{label}: API call, p95", _p95(walls), "ms")
    polls = max(s.polls for s in done)
    same = sum(s.same_version for s in done)
    ctx.figure(
        AREA,
        f"{label}: sent -> visible in snapshot, median",
        median(visible),
        "ms",
        samples=visible,
        reference=median(bodies),
        ratio=_ratio(visible, bodies),
        note=f"{median(after_answer):.1f} ms after the answer; at most {polls} poll(s); in the "
        f"change feed in the same version {same}/{len(done)}; reference: a bare 200 of the "
        "same gzip body",
    )
    ctx.figure(AREA, f"{label}: sent -> visible in snapshot, p95", _p95(visible), "ms")


def _first_figure(ctx: Context, size: int, first: Sample) -> None:
    """The first removal a process makes also learns the token's own teammate (`GET /me`)."""
    ctx.figure(
        AREA,
        f"first removal in a process ({size:,} teammates): API call",
        first.wall * 1000,
        "ms",
        reference=first.reference_rtt * 1000,
        ratio=first.wall / first.reference_rtt if first.reference_rtt else None,
        note=f"{_calls_text(first.calls, 1)}; visible after "
        f"{(first.visible or float('nan')) * 1000:.0f} ms",
    )


def _probe_figures(ctx: Context, size: int, kind: str, probes: list[Probe]) -> None:
    label = f"{kind} ({size:,} teammates)"
    walls = _ms([p.wall for p in probes])
    rtts = _ms([p.reference_rtt for p in probes])
    total: Calls = sum((p.calls for p in probes), Counter())
    ctx.figure(
        AREA,
        f"{label}: Intercom calls in all",
        float(sum(total.values())),
        "calls",
        note=_calls_text(total, len(probes)),
    )
    ctx.figure(
        AREA,
        f"{label}: API call, median",
        median(walls),
        "ms",
        samples=walls,
        reference=median(rtts),
        ratio=_ratio(walls, rtts),
        note=f"p95 {_p95(walls):.1f} ms; reference: a bare 304 round trip",
    )


def _judge(run: _Run) -> None:
    """Each request made exactly the Intercom calls it should; `GET /me` (the token's own
    teammate, a protected one) at most once in the process, wherever it fell."""
    s = run.samples
    requests: list[tuple[str, Calls, Calls]] = [
        (what, sample.calls, sample.expected)
        for what, samples in (
            ("removal", s.removal),
            ("team add", s.team_add),
            ("team removal", s.team_removal),
        )
        for sample in samples
    ]
    requests += [(kind, p.calls, p.expected) for kind, probes in s.probes.items() for p in probes]
    me = 0
    for what, calls, expected in requests:
        missing = expected - calls
        extra = calls - expected
        me += extra.pop("GET /me", 0)
        if missing or extra:
            run.fail(f"{what}: Intercom calls {dict(calls)}, expected {dict(expected)}")
    if me > 1:
        run.fail(f"GET /me was called {me} times; once per process is expected")
    if s.echo_calls:
        run.fail(f"applying the removal webhooks made Intercom calls: {dict(s.echo_calls)}")


def _snapshot(service: ServerProcess) -> tuple[bytes, str, int]:
    with (
        client(service) as http,
        http.stream("GET", "/api/v1/snapshot", headers=POLL_HEADERS) as response,
    ):
        response.raise_for_status()
        raw = b"".join(response.iter_raw())
        etag = response.headers["etag"]
    version = int(orjson.loads(gzip.decompress(raw))["version"])
    return raw, etag, version


def _one_size(ctx: Context, size: int, repeat: int) -> None:
    workspace = workspace_for(size)
    cast = cast_of(workspace, repeat)
    with (
        SimulatorServer(workspace, access_token=SIM_TOKEN, client_secret=SIM_SECRET) as sim,
        ctx.backend.fresh_database(ctx.workdir) as url,
    ):
        service = start_service(
            url,
            sim,
            ctx.workdir,
            ctx.cores,
            provisioning_api_tokens=PROVISIONING_TOKEN,
            removal_reassign_admin_id=cast.target,
            protected_admin_ids=cast.protected,
        )
        reference: ServerProcess | None = None
        run: _Run | None = None
        try:
            baseline = run_baseline(service)
            if baseline["status"] != "succeeded":
                ctx.report.fail(f"provisioning: the baseline did not succeed: {baseline}")
                return
            # The activity-log read that follows a baseline calls Intercom too: let it finish
            # before the request log is read.
            wait_for(
                lambda: readiness(service).get("activity_log_read_to"),
                timeout=120,
                interval=0.05,
                what="the activity-log read after the baseline",
            )
            # Intercom tells the service of each removal, as it would in production.
            httpx.put(
                f"{sim.url}/_sim/provisioning",
                json={"webhook_urls": [f"{service.url}/webhooks/intercom"]},
                timeout=30,
            ).raise_for_status()
            raw, etag, version = _snapshot(service)
            reference = start_reference(ctx.workdir, ctx.cores, body=raw, etag=etag)
            run = _Run(ctx, sim, service, reference, size, etag, version)
            log(f"provisioning: {size:,} teammates, {repeat} repetitions, etag {etag}")
            for index in range(repeat):
                run.removal(cast.removed[index], cast.dry_removed[index])
                team_id, user_id = cast.team_pairs[index]
                run.team_change(team_id, user_id, cast.dry_pairs[index])
                last = run.samples.removal[-1], run.samples.team_add[-1]
                log(
                    f"  {index + 1}/{repeat}: removal {last[0].wall * 1000:.0f} ms, visible "
                    f"{(last[0].visible or 0) * 1000:.0f} ms; team add {last[1].wall * 1000:.0f}"
                    f" ms, visible {(last[1].visible or 0) * 1000:.0f} ms"
                )
        finally:
            if run is not None:
                run.close()
            if reference is not None:
                reference.stop()
            service.stop()
    if run is None:
        return
    _judge(run)
    if run.samples.removal:
        _first_figure(ctx, size, run.samples.removal[0])
    _write_figures(ctx, size, "removal", run.samples.removal)
    _write_figures(ctx, size, "team add", run.samples.team_add)
    _write_figures(ctx, size, "team removal", run.samples.team_removal)
    for kind, probes in run.samples.probes.items():
        _probe_figures(ctx, size, kind, probes)


def run(ctx: Context) -> None:
    for size in ctx.plan.provisioning_sizes:
        _one_size(ctx, size, ctx.plan.provisioning_repeat)
