"""Events reach zope.event / gevent.events subscribers, and a bad subscriber hurts no one."""
from __future__ import annotations

import logging

import gevent
import gevent.events
import zope.event

import monitor_agent
from monitor_agent.events import EventLoopBlocked, EventLoopUnblocked, MemoryUsageThresholdExceeded

from .helpers import wait_until
from .reliability._record import observed


def _block(seconds: float) -> None:
    from gevent.monkey import get_original

    get_original("time", "sleep")(seconds)


class TestDelivery:
    """In-process delivery."""

    def test_zope_and_gevent_subscribers_receive_objects(self) -> None:
        """Both registration styles see the same event objects, which are gevent's classes."""
        via_zope, via_gevent = [], []
        zope.event.subscribers.append(via_zope.append)
        gevent.events.subscribers.append(via_gevent.append)
        try:
            agent = monitor_agent.install(transports="")
            wait_until(lambda: agent.monitor.running)
            gevent.spawn(_block, 0.3).join()
            wait_until(lambda: any(isinstance(e, EventLoopUnblocked) for e in via_zope))
        finally:
            zope.event.subscribers.remove(via_zope.append)
            gevent.events.subscribers.remove(via_gevent.append)
        assert [type(e) for e in via_zope] == [gevent.events.PeriodicMonitorThreadStartedEvent, EventLoopBlocked,
                                               EventLoopUnblocked]
        assert via_zope[0].monitor is agent.monitor
        assert via_zope == via_gevent
        assert isinstance(via_zope[1], gevent.events.EventLoopBlocked)
        assert gevent.events.IEventLoopBlocked.providedBy(via_zope[1])


class TestIsolation:
    """Subscriber faults."""

    def test_raising_subscriber_does_not_stop_others_or_the_monitor(self, events, caplog) -> None:
        """A subscriber that raises is logged once and counted; later subscribers and later events still flow."""

        def angry(event):
            raise ValueError("subscriber bug")

        gevent.events.subscribers.insert(0, angry)
        try:
            agent = monitor_agent.install(transports="")
            with caplog.at_level(logging.WARNING, logger="monitor_agent"):
                for _ in range(3):
                    agent.emit(MemoryUsageThresholdExceeded(2, 1, None))
                wait_until(lambda: agent.monitor.running)
                gevent.spawn(_block, 0.25).join()
                events.wait_for(EventLoopUnblocked)
        finally:
            gevent.events.subscribers.remove(angry)
        assert len(events.of(MemoryUsageThresholdExceeded)) == 3
        # 3 memory events + PeriodicMonitorThreadStartedEvent + blocked + unblocked
        assert agent.stats()["events"]["subscriber_errors"] == 6
        assert len([r for r in caplog.records if "subscriber bug" in r.getMessage()]) == 1
        observed("a subscriber that raises on every event", "gevent.events.subscribers.insert(0, raising)",
                 "the other subscribers got every event; 6 errors counted, logged once; detection unaffected", 0)

    def test_subscriber_using_gevent_api_in_monitor_thread(self, events, caplog) -> None:
        """A subscriber calling gevent.sleep in the monitor thread gets its stray hub removed, once logged."""
        from gevent._hub_local import get_hub_if_exists

        hubs = []

        def naughty(event):
            if isinstance(event, (EventLoopBlocked, EventLoopUnblocked)):  # delivered in the monitor thread
                gevent.sleep(0.001)  # makes a hub in whatever thread calls it
                hubs.append(get_hub_if_exists())

        gevent.events.subscribers.append(naughty)
        try:
            agent = monitor_agent.install(transports="")
            wait_until(lambda: agent.monitor.running)
            with caplog.at_level(logging.WARNING, logger="monitor_agent"):
                gevent.spawn(_block, 0.25).join()
                events.wait_for(EventLoopUnblocked)
        finally:
            gevent.events.subscribers.remove(naughty)
        assert len(hubs) == 2 and all(h is not None for h in hubs)
        assert all(h.loop is None for h in hubs), "the stray hubs were destroyed"
        assert len([r for r in caplog.records if "used the gevent API" in r.getMessage()]) == 1
        assert gevent.get_hub().loop is not None
        observed("a subscriber that calls the gevent API from the monitor thread", "gevent.sleep() in a subscriber",
                 "the stray hub it made in the monitor thread was destroyed after each call; logged once; the "
                 "application's hub untouched", 0)
