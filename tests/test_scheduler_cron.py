"""p2pico.scheduler's sans-I/O core: the cron parser, next fire times, and job records."""

from __future__ import annotations

import datetime

import pytest

from p2pico.scheduler import CronError, after_fire, check_jobs, due, new_job, parse_cron, public


def ts(text: str) -> float:
    """Epoch seconds of an ISO-8601 UTC time."""
    return datetime.datetime.fromisoformat(text).replace(tzinfo=datetime.UTC).timestamp()


def iso(t: float | None) -> str:
    assert t is not None
    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S")


def upcoming(spec: str, start: str, n: int = 3) -> list[str]:
    cron, t, out = parse_cron(spec), ts(start), []
    for _ in range(n):
        nxt = cron.next_after(t)
        out.append(iso(nxt))
        assert nxt is not None
        t = nxt
    return out


@pytest.mark.parametrize(
    ("spec", "start", "expected"),
    [
        ("* * * * *", "2024-01-01T00:00:00", ["2024-01-01T00:01:00", "2024-01-01T00:02:00"]),
        ("*/5 * * * *", "2024-01-01T00:03:59", ["2024-01-01T00:05:00", "2024-01-01T00:10:00"]),
        ("0 */6 * * *", "2024-01-01T05:00:00", ["2024-01-01T06:00:00", "2024-01-01T12:00:00"]),
        ("15,45 9-10 * * *", "2024-01-01T09:20:00", ["2024-01-01T09:45:00", "2024-01-01T10:15:00"]),
        ("0 0 1 */3 *", "2024-02-10T00:00:00", ["2024-04-01T00:00:00", "2024-07-01T00:00:00"]),
        ("30 8 * * mon-fri", "2024-01-05T09:00:00", ["2024-01-08T08:30:00", "2024-01-09T08:30:00"]),
        ("0 12 * * 7", "2024-01-01T00:00:00", ["2024-01-07T12:00:00", "2024-01-14T12:00:00"]),
        (
            "0 0 * JAN,Dec SUN",
            "2024-01-27T00:00:00",
            ["2024-01-28T00:00:00", "2024-12-01T00:00:00"],
        ),
        ("10/20 * * * *", "2024-01-01T00:00:00", ["2024-01-01T00:10:00", "2024-01-01T00:30:00"]),
        ("0 0 29 2 *", "2024-03-01T00:00:00", ["2028-02-29T00:00:00", "2032-02-29T00:00:00"]),
        # both day fields restricted: either matches (Vixie cron)
        ("0 0 13 * fri", "2024-09-01T00:00:00", ["2024-09-06T00:00:00", "2024-09-13T00:00:00"]),
        ("0 0 ? * 1", "2024-01-01T00:00:00", ["2024-01-08T00:00:00", "2024-01-15T00:00:00"]),
        # six fields: a leading second field (node-schedule, the catalog's "0 */5 * * * *")
        ("0 */5 * * * *", "2024-01-01T00:00:01", ["2024-01-01T00:05:00", "2024-01-01T00:10:00"]),
        ("*/20 * * * * *", "2024-01-01T00:00:00", ["2024-01-01T00:00:20", "2024-01-01T00:00:40"]),
    ],
)
def test_next_times(spec: str, start: str, expected: list[str]) -> None:
    assert upcoming(spec, start, len(expected)) == expected


def test_next_time_is_strictly_after_and_whole() -> None:
    cron = parse_cron("*/5 * * * *")
    assert iso(cron.next_after(ts("2024-01-01T00:05:00"))) == "2024-01-01T00:10:00"
    assert iso(cron.next_after(ts("2024-01-01T00:04:59") + 0.999)) == "2024-01-01T00:05:00"


def test_a_timespec_that_never_matches() -> None:
    assert parse_cron("0 0 30 2 *").next_after(ts("2024-01-01T00:00:00")) is None
    with pytest.raises(CronError, match="matches no time in 9 years"):
        new_job(
            rid="r", eci="e", domain="d", type="t", attrs={}, at=None,
            timespec="0 0 31 4 *", now=0.0,
        )  # fmt: skip


@pytest.mark.parametrize(
    ("spec", "message"),
    [
        ("* * * *", "has 4 fields; expected 5 (minute hour day-of-month month day-of-week) or 6"),
        ("* * * * * * *", "has 7 fields"),
        ("", "has 0 fields"),
        ("60 * * * *", "minute field '60': 60 is out of range 0-59"),
        ("* 24 * * *", "hour field '24': 24 is out of range 0-23"),
        ("* * 0 * *", "day-of-month field '0': 0 is out of range 1-31"),
        ("* * * 13 *", "month field '13': 13 is out of range 1-12"),
        ("* * * * 8", "day-of-week field '8': 8 is out of range 0-7"),
        ("*/0 * * * *", "minute field '*/0': step '0' must be a whole number of at least 1"),
        ("*/x * * * *", "minute field '*/x': step 'x'"),
        ("5-1 * * * *", "minute field '5-1': range '5-1' runs backwards"),
        ("1,,2 * * * *", "minute field '1,,2': empty list item"),
        ("* * * foo *", "month field 'foo': 'foo' is not a number or a name"),
        ("a * * * *", "minute field 'a': 'a' is not a number"),
        ("? * * * *", "minute field '?'"),
        ("-1 * * * *", "minute field '-1'"),
        ("61 * * * * *", "second field '61': 61 is out of range 0-59"),
    ],
)
def test_invalid_timespecs_name_the_field(spec: str, message: str) -> None:
    with pytest.raises(CronError) as err:
        parse_cron(spec)
    assert message in str(err.value)
    assert repr(spec) in str(err.value)


def test_job_records() -> None:
    at = new_job(
        rid="r", eci="c1", domain="d", type="t", attrs={"n": 1}, at=105.5, timespec=None, now=100.0
    )
    assert at == {
        "rid": "r",
        "eci": "c1",
        "event": {"domain": "d", "type": "t", "attrs": {"n": 1}},
        "time": 105.5,
    }
    assert due(at) == 105.5
    assert after_fire(at, 106.0) is None  # an at job is gone once it fired
    assert public("s1", at) == {
        "id": "s1",
        "rid": "r",
        "eci": "c1",
        "event": at["event"],
        "time": 105.5,
    }

    now = ts("2024-01-01T00:03:00")
    rep = new_job(
        rid="r", eci="c1", domain="d", type="t", attrs={}, at=None, timespec="*/5 * * * *", now=now
    )
    assert iso(due(rep)) == "2024-01-01T00:05:00"
    fired = after_fire(rep, ts("2024-01-01T00:05:00.002"))
    assert fired is not None
    assert iso(due(fired)) == "2024-01-01T00:10:00"
    # missed while down: it fires once, then runs on from now, not from the missed times
    late = after_fire(rep, ts("2024-01-01T09:41:07"))
    assert late is not None
    assert iso(due(late)) == "2024-01-01T09:45:00"
    assert public("s2", rep) == {
        "id": "s2",
        "rid": "r",
        "eci": "c1",
        "event": rep["event"],
        "timespec": "*/5 * * * *",
    }
    assert check_jobs({"s1": at, "s2": rep}) == {"s1": at, "s2": rep}


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ([], "meta.schedule must be a map"),
        ({"s": 1}, "scheduled job 's': expected a map"),
        ({"s": {"rid": "r"}}, "needs rid, eci and event"),
        (
            {"s": {"rid": "r", "eci": "", "event": {"domain": "d", "type": "t", "attrs": {}}}},
            "needs 'time', or 'timespec' and 'next'",
        ),
        (
            {"s": {"rid": "r", "eci": "", "event": {"domain": "d", "type": "t", "attrs": {}},
                   "timespec": "* *", "next": 1}},
            "has 2 fields",
        ),
    ],
)  # fmt: skip
def test_bad_job_records_in_a_state_are_refused(value: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_jobs(value)
