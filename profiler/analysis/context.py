"""What every rule needs, computed once per session: the measures (:class:`profiler.measures.
Measures`: requests, stages, hotspots, the wire) plus the calibration that turns a share of
time into an estimated gain, and the gain model itself.

Rules read this; they never read a server's configuration to judge. ``server_knobs`` is
there only so a fix for the sample server can be worded as the flag to change.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable

from profiler.analysis.model import Gain
from profiler.measures import Measures


@dataclass
class AnalysisContext(Measures):
    calibration_loader: Callable[[], Any] | None = None
    host_timings: bool = True  # small timings on this host (a JPEG decode) are allowed
    notes: list[str] = field(default_factory=list)

    @cached_property
    def server_knobs(self) -> list[str]:
        return list((self.meta.get("server") or {}).get("knobs") or [])

    @cached_property
    def busy_ns(self) -> float:
        """The denominator of every rule's ``removed``: the server's busy time — its work summed
        over requests or threads — or, for a trace with neither stages nor samples (an imported
        profiler trace), its wall time: everything it shows is the work."""
        return self.service_ns if self.service_ns > 0 else self.window_ns

    @cached_property
    def saturated(self) -> bool:
        """Requests wait more than they are worked on: latency is queueing, so a fix that
        raises capacity shortens latency in proportion (Little's law)."""
        if self.stage_basis == "stage spans":
            queue = float(self.stage_ns.get("queue", 0.0))
            return queue > 0.3 * max(float(self.stage_ns.sum()), 1.0)
        wire = self.wire
        return bool(wire is not None and wire.in_flight_mean >= 2.0)

    @cached_property
    def calibration(self) -> Any:
        if self.calibration_loader is None:
            return None
        try:
            return self.calibration_loader()
        except LookupError as exc:  # the model is unknown or not timed yet: the note says what to do
            self.notes.append(str(exc.args[0]))
            return None
        except Exception as exc:  # a gain without its factor is still worth reporting
            self.notes.append(f"calibration unavailable ({type(exc).__name__}: {exc}); gains use shares only")
            return None

    def draft_factor(self, decode_ms_per_request: float) -> Any:
        """What a reduced-scale JPEG decode saves on this host for JPEGs of the size the requests
        carried (the wire probe's reading), else for images that decode like the session's
        (:mod:`profiler.analysis.factors`, a second's timing); None when host timings are not
        allowed (``--no-calibration``)."""
        if not self.host_timings:
            return None
        from profiler.analysis.factors import draft_factor, draft_factor_for  # Pillow: only when judged

        images = self.images
        if images is not None and images.format == "jpeg":  # the size the requests carried
            return draft_factor_for(images.width, images.height)
        return draft_factor(decode_ms_per_request)

    def preprocess_reference_ms(self) -> tuple[Any, float] | None:
        """(the median image seen, what resize + crop + normalise of an image that size costs
        on this host, one thread: :func:`profiler.analysis.factors.preprocess_reference_ms`);
        None without image sizes from the wire or when host timings are not allowed."""
        images = self.images
        if images is None or not self.host_timings:
            return None
        from profiler.analysis.factors import preprocess_reference_ms

        return images, preprocess_reference_ms(images.width, images.height)

    # -- gains ---------------------------------------------------------------------------

    GIL_BOUND = 0.5  # the GIL held in at least half the snapshots: the interpreter is the bottleneck

    def gil_removed(self, *labels: str) -> float | None:
        """For a GIL-bound server, the fraction of its capacity that removing the work of these
        attribution labels frees: their share of the GIL-held time (every thread waits for the
        one interpreter, so that time — not a per-request share — bounds throughput). None when
        the GIL is not the bottleneck or no snapshots say."""
        gil = self.gil
        if gil is None or gil.held_share < self.GIL_BOUND:
            return None
        return gil.held_share * gil.held_by(*labels)

    def e2e_share(self, fraction_removed: float) -> float:
        """The share of end-to-end request time that removing ``fraction_removed`` of the
        server's work takes away: all of it when requests queue for that work, else only
        the work itself."""
        requests = self.requests
        if self.saturated or requests is None or requests.total_ns <= 0 or self.service_ns <= 0:
            return fraction_removed  # (no busy time measured: the requests' time is all there is to go by)
        return min(fraction_removed * self.service_ns / requests.total_ns, 1.0)

    def host_cpu_cap(self, cpu_removed: float) -> float | None:
        """The most throughput can grow before the server runs out of the cores other processes
        leave it (a load generator on this host, neighbours; their use taken as it was: measured
        on the corpus, it did not grow with the answers): its CPU per request, less
        ``cpu_removed`` of it, must fit the free cores. None without the CPU counters."""
        used = self.cores_used
        if not used or self.other_cores_used is None:
            return None
        return self.free_cores / max(used * (1.0 - cpu_removed), 1e-6)

    def amdahl(self, fraction_removed: float, assumptions: list[str], method: str = "amdahl",
               of_latency: bool = False, frees_cpu: bool = True) -> Gain:
        """Gain from removing ``fraction_removed`` of the server's per-request work (or, with
        ``of_latency``, of each request's time: closed-loop clients send as fast as answers come),
        bounded by the machine's cores (:meth:`host_cpu_cap`; ``frees_cpu``: the removed part is
        CPU work, else the CPU per request stays)."""
        fraction_removed = min(max(fraction_removed, 0.0), 0.95)
        speedup = 1.0 / (1.0 - fraction_removed)
        cap = self.host_cpu_cap(fraction_removed if frees_cpu else 0.0)
        if cap is not None and 1.0 <= cap < speedup:
            speedup = cap
            assumptions = [*assumptions, f"bounded by the cores free to the server: {self.cores} less "
                           f"{self.other_cores_used:.2f} other processes use (a load generator on this host?); it "
                           f"used {self.cores_used:.2f}, and its CPU per request "
                           f"{'falls by the share removed' if frees_cpu else 'stays'}"]
        requests = self.requests
        before = requests.throughput_rps if requests else None
        p50 = requests.percentile(50) if requests else None
        if p50 is not None and of_latency:
            p50_after = p50 * (1.0 - fraction_removed)
        elif p50 is not None and self.saturated:
            p50_after = p50 / speedup
            assumptions = [*assumptions, "the server is saturated (requests queue): latency falls with capacity"]
        elif p50 is not None and requests is not None and requests.count:
            saved_ms = fraction_removed * self.service_ns / requests.count / 1e6
            p50_after = max(p50 - saved_ms, 0.0)
        else:
            p50_after = None
        return Gain(throughput_x=round(speedup, 3), method=method, throughput_rps_before=before,
                    throughput_rps_after=before * speedup if before else None, p50_ms_before=p50,
                    p50_ms_after=p50_after, assumptions=assumptions)

    def busy_fraction(self, e2e_fraction: float) -> float:
        """The fraction of busy time whose removal takes ``e2e_fraction`` off end-to-end request
        time: the inverse of :meth:`e2e_share`, for evidence measured in request time."""
        requests = self.requests
        if self.saturated or requests is None or requests.total_ns <= 0 or self.service_ns <= 0:
            return e2e_fraction
        return e2e_fraction * requests.total_ns / self.service_ns
